# --- service helpers (service_* actions) ----------------------------------------------------------
function Assert-WinnodeServiceName {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name
    )

    # Checked here as well as by the operator: the service name is the one value these scripts hand
    # to sc.exe, and Windows PowerShell quotes native arguments with spaces or quotes unreliably.
    if ($Name -cnotmatch '^[A-Za-z0-9_.-]{1,80}$') {
        throw "Invalid service name '$Name': use 1 to 80 letters, digits, '_', '.' or '-'."
    }
}

function ConvertFrom-WinnodeFailureActions {
    param(
        [AllowNull()]
        [byte[]] $Bytes
    )

    # SERVICE_FAILURE_ACTIONS as the SCM stores it under the service key: reset period in seconds,
    # two pointer slots, the number of actions, one more pointer slot (all DWORDs), then one SC_ACTION
    # (type, delay in ms) per action. Action types: 0 none, 1 restart, 2 reboot, 3 run a command.
    if ($null -eq $Bytes -or $Bytes.Length -lt 20) {
        return $null
    }
    $count = [System.BitConverter]::ToUInt32($Bytes, 12)
    $actions = New-Object -TypeName 'System.Collections.Generic.List[object]'
    for ($i = 0; $i -lt $count -and (28 + 8 * $i) -le $Bytes.Length; $i++) {
        $actions.Add([pscustomobject]@{
            Type = [System.BitConverter]::ToUInt32($Bytes, 20 + 8 * $i)
            Delay = [System.BitConverter]::ToUInt32($Bytes, 24 + 8 * $i)
        })
    }
    return [pscustomobject]@{
        ResetPeriod = [System.BitConverter]::ToUInt32($Bytes, 0)
        Actions = $actions.ToArray()
    }
}

function Get-WinnodeService {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name
    )

    # WQL string literals escape backslash and quote with a backslash.
    $literal = $Name.Replace('\', '\\').Replace("'", "\'")
    $instance = Get-CimInstance -ClassName Win32_Service -Filter "Name = '$literal'"
    if ($null -eq $instance) {
        return $null
    }
    $key = Get-Item -LiteralPath ('HKLM:\SYSTEM\CurrentControlSet\Services\' + [string]$instance.Name)
    $states = @{ 'Running' = 'Running'; 'Stopped' = 'Stopped'; 'Start Pending' = 'StartPending'; 'Stop Pending' = 'StopPending' }
    $startTypes = @{ 'Auto' = 'Automatic'; 'Manual' = 'Manual'; 'Disabled' = 'Disabled' }
    return [pscustomobject]@{
        Instance = $instance
        Name = [string]$instance.Name
        DisplayName = [string]$instance.DisplayName
        PathName = [string]$instance.PathName
        Description = [string]$instance.Description
        State = $states[[string]$instance.State]
        StartType = $startTypes[[string]$instance.StartMode]
        Dependencies = @($key.GetValue('DependOnService', [string[]]@()) | Where-Object { $_ })
        FailureActions = ConvertFrom-WinnodeFailureActions -Bytes $key.GetValue('FailureActions', $null)
        FailureActionsOnNonCrash = [int]$key.GetValue('FailureActionsOnNonCrashFailures', 0)
    }
}

function Wait-WinnodeServiceState {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name,
        [Parameter(Mandatory = $true)]
        [ValidateSet('Running', 'Stopped')]
        [string] $State,
        [Parameter(Mandatory = $true)]
        [int] $TimeoutSeconds
    )

    $service = Get-Service -Name $Name
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while ($true) {
        $service.Refresh()
        $current = [string]$service.Status
        if ($current -eq $State) {
            return $current
        }
        if ($State -eq 'Running' -and $current -eq 'Stopped') {
            throw "Service '$Name' stopped right after it was started: see the System event log (Service Control Manager events 7000-7034) and the service's own log."
        }
        if ([DateTime]::UtcNow -ge $deadline) {
            throw "Service '$Name' did not reach $State within ${TimeoutSeconds}s (it is $current)."
        }
        Start-Sleep -Milliseconds 250
    }
}
function Get-WinnodeServiceInfos {
    param(
        [AllowEmptyCollection()]
        [object[]] $Names = @()
    )

    # State and configuration of each service, keyed by the name as the operator sent it.
    $services = New-WinnodeMap
    foreach ($requested in $Names) {
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
    return , $services
}
# --- end of service helpers -----------------------------------------------------------------------
