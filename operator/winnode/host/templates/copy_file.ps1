# copy_file: copies a file that is already on the host (a staged download, a kept previous binary)
# to a target, through a temporary file beside the target that is renamed into place, so the target
# is never half-written (Install-WinnodeFile). With a sha256 the source is verified first; a target
# that already holds the source's content is left alone.
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
Install-WinnodeFile -Path $target -Checksum $actual -Source $source -Suffix 'copy' -Fill {
    param(
        [string] $temporary
    )

    [System.IO.File]::Copy($source, $temporary, $true)
}
