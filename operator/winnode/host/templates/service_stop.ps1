# service_stop: stop a service, and first the running services that depend on it, then wait until
# it has stopped. A stopped service is left alone.
#winnode:include _services.ps1
$name = [string]$P.name
Assert-WinnodeServiceName -Name $name
$service = Get-Service -Name $name
if ([string]$service.Status -eq 'Stopped') {
    Write-WinnodeResult @{ state = 'Stopped'; changed = $false }
}
if ([string]$service.Status -ne 'StopPending') {
    Stop-Service -InputObject $service -Force -NoWait
}
$state = Wait-WinnodeServiceState -Name $name -State 'Stopped' -TimeoutSeconds ([int]$P.timeout_s)
Write-WinnodeResult @{ state = $state; changed = $true }
