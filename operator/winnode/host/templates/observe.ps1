# observe: everything a drift check compares with the desired state, in one read. Read-only.
# The host's facts (with its boot id), the owner marker, the named files' SHA-256, services, HNS
# networks, firewall rules and Defender exclusions, each read by the same helpers as the
# single-purpose read actions.
#winnode:include _hns.ps1
#winnode:include _facts.ps1
#winnode:include _owner.ps1
#winnode:include _files.ps1
#winnode:include _services.ps1
#winnode:include _firewall.ps1
#winnode:include _defender.ps1
$result = @{ facts = (Get-WinnodeFacts) }
if ([bool]$P.owner) {
    $result['owner'] = Get-WinnodeHostOwner
}
$result['files'] = Get-WinnodeFileStats -Paths @($P.files)
$result['services'] = Get-WinnodeServiceInfos -Names @($P.services)

# An HNS that does not answer is reported, not fatal: the network step reads it again and says why.
$hnsNames = @($P.hns_networks)
if ($hnsNames.Count -gt 0) {
    try {
        $result['hns_networks'] = Get-WinnodeHnsNetworkInfos -Names $hnsNames
    } catch {
        $result['hns_error'] = [string]$_.Exception.Message
    }
}

$rules = New-WinnodeMap
foreach ($requested in @($P.firewall_rules)) {
    $rules[[string]$requested] = Get-WinnodeFirewallRuleInfo -Name ([string]$requested)
}
$result['firewall_rules'] = $rules

$defenderProcesses = @($P.defender_processes | ForEach-Object { [string]$_ })
if ($defenderProcesses.Count -gt 0) {
    $running = Test-WinnodeDefenderRunning
    $excluded = @()
    if ($running) {
        $excluded = @(Get-WinnodeDefenderExcluded -Processes $defenderProcesses)
    }
    $result['defender'] = @{ running = $running; excluded = $excluded }
}

Write-WinnodeResult $result
