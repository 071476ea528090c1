# hns_network_query: what HNS knows about each named network. Read-only.
#winnode:include _hns.ps1
Write-WinnodeResult @{ networks = (Get-WinnodeHnsNetworkInfos -Names @($P.names)) }
