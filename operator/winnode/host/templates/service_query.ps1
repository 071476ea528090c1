# service_query: state and configuration of each service. Read-only.
#winnode:include _services.ps1
Write-WinnodeResult @{ services = (Get-WinnodeServiceInfos -Names @($P.names)) }
