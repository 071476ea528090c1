# fetch_file: the host downloads a file itself, into a temporary file beside the target that is
# renamed into place only once complete (and, with a sha256, verified). A file that already has the
# expected hash is not downloaded again. Never BITS: Start-BitsTransfer needs an interactive logon
# and fails in a WinRM session.
$url = [string]$P.url
$target = [System.IO.Path]::GetFullPath([string]$P.path)
$expected = $null
if ($null -ne $P.sha256) {
    $expected = ([string]$P.sha256).ToLowerInvariant()
}

if ($null -ne $expected -and [System.IO.File]::Exists($target)) {
    $current = Get-WinnodeFileSha256 -Path $target
    if ($current -eq $expected) {
        Write-WinnodeResult @{ changed = $false; sha256 = $current; size = (Get-Item -LiteralPath $target).Length }
    }
}

$directory = [System.IO.Path]::GetDirectoryName($target)
[System.IO.Directory]::CreateDirectory($directory) | Out-Null
# A name of our own: Invoke-WebRequest -OutFile in Windows PowerShell mishandles '[' in paths.
$temporary = [System.IO.Path]::Combine($directory, ('.winnode-{0}.download' -f [guid]::NewGuid().ToString('N')))
try {
    # .NET Framework on Server 2019 still offers TLS 1.0 first unless told otherwise.
    [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
    Invoke-WebRequest -Uri $url -OutFile $temporary -UseBasicParsing -TimeoutSec 600
    $actual = Get-WinnodeFileSha256 -Path $temporary
    if ($null -ne $expected -and $actual -ne $expected) {
        throw "Checksum mismatch for $url (-> $target): expected sha256 $expected, actual $actual"
    }
    $size = (Get-Item -LiteralPath $temporary).Length
    if ([System.IO.File]::Exists($target) -and (Get-WinnodeFileSha256 -Path $target) -eq $actual) {
        Write-WinnodeResult @{ changed = $false; sha256 = $actual; size = $size }
    }
    # Fails while the file is an executable that is running: stop its service first.
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
