# --- file state (stat_files, observe) --------------------------------------------------------------
function Get-WinnodeFileStats {
    param(
        [AllowEmptyCollection()]
        [object[]] $Paths = @()
    )

    # Keyed by the path exactly as the operator sent it.
    $files = New-WinnodeMap
    foreach ($path in $Paths) {
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
    return , $files
}
# --- end of file state -----------------------------------------------------------------------------
