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

# A name of our own (the temporary file's): Invoke-WebRequest -OutFile in Windows PowerShell
# mishandles '[' in paths.
Install-WinnodeFile -Path $target -Checksum $expected -Source $url -Suffix 'download' -Fill {
    param(
        [string] $temporary
    )

    # .NET Framework on Server 2019 still offers TLS 1.0 first unless told otherwise.
    [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
    Invoke-WebRequest -Uri $url -OutFile $temporary -UseBasicParsing -TimeoutSec 600
}
