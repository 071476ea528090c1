# hns_network_remove: delete the HNS network with this name (and the endpoints HNS keeps on it).
#winnode:include _hns.ps1
$existing = @(Get-WinnodeHnsNetwork -Name ([string]$P.name))
foreach ($network in $existing) {
    Invoke-WinnodeHns -Method 'DELETE' -Path ('/networks/' + [string]$network.ID) | Out-Null
}
Write-WinnodeResult @{ removed = ($existing.Length -gt 0) }
