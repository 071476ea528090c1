# hns_network_query: what HNS knows about each named network. Read-only.
#winnode:include _hns.ps1
$networks = New-WinnodeMap
foreach ($requested in @($P.names)) {
    $name = [string]$requested
    $found = @(Get-WinnodeHnsNetwork -Name $name)
    if ($found.Length -eq 0) {
        $networks[$name] = @{ exists = $false }
    } else {
        $networks[$name] = ConvertTo-WinnodeHnsInfo -Network $found[0]
    }
}

Write-WinnodeResult @{ networks = $networks }
