# service_start: start a service (the Service Control Manager starts its dependencies first) and wait
# until it runs. A service that is already running is left alone.
#winnode:include _services.ps1
$name = [string]$P.name
Assert-WinnodeServiceName -Name $name
$service = Get-Service -Name $name
if ([string]$service.Status -eq 'Running') {
    Write-WinnodeResult @{ state = 'Running'; changed = $false }
}
if ([string]$service.Status -ne 'StartPending') {
    try {
        $service.Start()
    } catch {
        throw "Service '$name' cannot be started: $($_.Exception.GetBaseException().Message)"
    }
}
$state = Wait-WinnodeServiceState -Name $name -State 'Running' -TimeoutSeconds ([int]$P.timeout_s)
Write-WinnodeResult @{ state = $state; changed = $true }
