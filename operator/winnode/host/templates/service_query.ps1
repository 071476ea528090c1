# service_query: state and configuration of each service. Read-only.
#winnode:include _services.ps1
$services = New-WinnodeMap
foreach ($requested in @($P.names)) {
    $name = [string]$requested
    $current = Get-WinnodeService -Name $name
    if ($null -eq $current) {
        $services[$name] = @{ exists = $false }
        continue
    }
    $services[$name] = @{
        exists = $true
        state = $current.State
        start_type = $current.StartType
        binary_path = $current.PathName
        description = $current.Description
        dependencies = @($current.Dependencies)
    }
}

Write-WinnodeResult @{ services = $services }
