# service_remove: stop a service and delete it from the Service Control Manager.
#winnode:include _services.ps1
$name = [string]$P.name
Assert-WinnodeServiceName -Name $name
$service = Get-Service -Name $name -ErrorAction SilentlyContinue
if ($null -eq $service) {
    Write-WinnodeResult @{ removed = $false }
}
if ([string]$service.Status -ne 'Stopped') {
    if ([string]$service.Status -ne 'StopPending') {
        Stop-Service -InputObject $service -Force -NoWait
    }
    Wait-WinnodeServiceState -Name $name -State 'Stopped' -TimeoutSeconds 120 | Out-Null
}
# Remove-Service only exists in PowerShell 6+. Exit code 1072: already marked for deletion.
$sc = Invoke-WinnodeNative -FilePath 'sc.exe' -ArgumentList @('delete', $name)
if ($sc.ExitCode -ne 0 -and $sc.ExitCode -ne 1072) {
    throw "sc.exe delete could not remove service '$name': $($sc.Output)"
}
Write-WinnodeResult @{ removed = $true }
