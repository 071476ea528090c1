# defender_exclusions_ensure: Microsoft Defender process exclusions for the node's own processes, so
# real-time scanning does not slow every container start (Microsoft's guidance for container hosts).
# Only when Defender runs; other exclusions are left alone.
#winnode:include _defender.ps1
$processes = @($P.processes | ForEach-Object { [string]$_ })
$present = [bool]$P.present
if (-not (Test-WinnodeDefenderRunning)) {
    Write-WinnodeResult @{ defender_running = $false; changed = $false; excluded = @() }
}
$excludedBefore = @(Get-WinnodeDefenderExcluded -Processes $processes)
$changed = $false
foreach ($process in $processes) {
    $has = @($excludedBefore | Where-Object { $_ -ieq $process }).Count -gt 0
    if ($present -and -not $has) {
        Add-MpPreference -ExclusionProcess $process
        $changed = $true
    } elseif (-not $present -and $has) {
        Remove-MpPreference -ExclusionProcess $process
        $changed = $true
    }
}
$excluded = @(Get-WinnodeDefenderExcluded -Processes $processes)
Write-WinnodeResult @{ defender_running = $true; changed = $changed; excluded = $excluded }
