# defender_exclusions_ensure: Microsoft Defender process exclusions for the node's own processes, so
# real-time scanning does not slow every container start (Microsoft's guidance for container hosts).
# Only when Defender runs; other exclusions are left alone.
$processes = @($P.processes | ForEach-Object { [string]$_ })
$present = [bool]$P.present
$status = Get-MpComputerStatus -ErrorAction SilentlyContinue
if ($null -eq $status -or -not [bool]$status.AMServiceEnabled) {
    Write-WinnodeResult @{ defender_running = $false; changed = $false; excluded = @() }
}
$current = @((Get-MpPreference).ExclusionProcess | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
$changed = $false
foreach ($process in $processes) {
    $has = @($current | Where-Object { $_ -ieq $process }).Count -gt 0
    if ($present -and -not $has) {
        Add-MpPreference -ExclusionProcess $process
        $changed = $true
    } elseif (-not $present -and $has) {
        Remove-MpPreference -ExclusionProcess $process
        $changed = $true
    }
}
$after = @((Get-MpPreference).ExclusionProcess | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
$excluded = @($processes | Where-Object { $p = $_; @($after | Where-Object { $_ -ieq $p }).Count -gt 0 })
Write-WinnodeResult @{ defender_running = $true; changed = $changed; excluded = $excluded }
