# copy_file: copies a file that is already on the host (a staged download, a kept previous binary)
# to a target, through a temporary file beside the target that is renamed into place, so the target
# is never half-written. With a sha256 the source is verified first; a target that already holds the
# source's content is left alone.
$source = [System.IO.Path]::GetFullPath([string]$P.source)
$target = [System.IO.Path]::GetFullPath([string]$P.path)
if (-not [System.IO.File]::Exists($source)) {
    throw "Cannot copy ${source}: the file does not exist"
}
$actual = Get-WinnodeFileSha256 -Path $source
if ($null -ne $P.sha256) {
    $expected = ([string]$P.sha256).ToLowerInvariant()
    if ($actual -ne $expected) {
        throw "Checksum mismatch for $source (-> $target): expected sha256 $expected, actual $actual"
    }
}
$size = (Get-Item -LiteralPath $source).Length
if ([System.IO.File]::Exists($target) -and (Get-WinnodeFileSha256 -Path $target) -eq $actual) {
    Write-WinnodeResult @{ changed = $false; sha256 = $actual; size = $size }
}

$directory = [System.IO.Path]::GetDirectoryName($target)
[System.IO.Directory]::CreateDirectory($directory) | Out-Null
$temporary = [System.IO.Path]::Combine($directory, ('.winnode-{0}.copy' -f [guid]::NewGuid().ToString('N')))
try {
    [System.IO.File]::Copy($source, $temporary, $true)
    # Fails while the target is an executable that is running: stop its service first.
    if ([System.IO.File]::Exists($target)) {
        [System.IO.File]::Delete($target)
    }
    [System.IO.File]::Move($temporary, $target)
    Write-WinnodeResult @{ changed = $true; sha256 = $actual; size = $size }
} finally {
    if ([System.IO.File]::Exists($temporary)) {
        [System.IO.File]::Delete($temporary)
    }
}
