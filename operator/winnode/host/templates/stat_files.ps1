# stat_files: existence, SHA-256 and size of each file. Read-only.
$files = New-WinnodeMap
foreach ($path in @($P.paths)) {
    $full = [System.IO.Path]::GetFullPath([string]$path)
    if ([System.IO.File]::Exists($full)) {
        $files[[string]$path] = @{
            exists = $true
            sha256 = Get-WinnodeFileSha256 -Path $full
            size = (Get-Item -LiteralPath $full).Length
        }
    } else {
        $files[[string]$path] = @{ exists = $false }
    }
}

Write-WinnodeResult @{ files = $files }
