# service_ensure: register a service with the Service Control Manager, or bring an existing one to
# the wanted command line, display name, description, start type, dependencies and recovery actions.
# Only what differs is changed, so running it again changes nothing.
#winnode:include _services.ps1
$name = [string]$P.name
Assert-WinnodeServiceName -Name $name
$binaryPath = [string]$P.binary_path
$displayName = [string]$P.display_name
$description = [string]$P.description
$startType = [string]$P.start_type
$dependencies = [string[]]@($P.dependencies | ForEach-Object { [string]$_ })
$restartDelay = [int]$P.recovery_restart_delay_ms
$resetPeriod = [int]$P.recovery_reset_period_s

$current = Get-WinnodeService -Name $name
$created = $false
$changed = $false
if ($null -eq $current) {
    $newService = @{
        Name = $name
        BinaryPathName = $binaryPath
        DisplayName = $displayName
        Description = $description
        StartupType = $startType
    }
    if ($dependencies.Length -gt 0) {
        $newService['DependsOn'] = $dependencies
    }
    New-Service @newService | Out-Null
    $created = $true
    $changed = $true
} else {
    # Win32_Service.Change takes every value as data; `sc.exe config binPath= ...` would need the
    # command line, quotes and all, re-quoted for a native program.
    $change = @{}
    if ($current.PathName -cne $binaryPath) {
        $change['PathName'] = $binaryPath
    }
    if ($current.DisplayName -cne $displayName) {
        $change['DisplayName'] = $displayName
    }
    if ($current.StartType -ne $startType) {
        $change['StartMode'] = $startType
    }
    $dependenciesDiffer = ($current.Dependencies -join '/') -ne ($dependencies -join '/')
    if ($dependenciesDiffer -and $dependencies.Length -gt 0) {
        $change['ServiceDependencies'] = $dependencies
    }
    if ($change.Count -gt 0) {
        $answer = Invoke-CimMethod -InputObject $current.Instance -MethodName Change -Arguments $change
        if ($answer.ReturnValue -ne 0) {
            throw "Win32_Service.Change of service '$name' returned $($answer.ReturnValue) (see the Win32_Service Change method's return codes)."
        }
        $changed = $true
    }
    if ($dependenciesDiffer -and $dependencies.Length -eq 0) {
        # Change reads an empty list as "leave unchanged"; sc.exe clears dependencies with "/".
        $sc = Invoke-WinnodeNative -FilePath 'sc.exe' -ArgumentList @('config', $name, 'depend=', '/')
        if ($sc.ExitCode -ne 0) {
            throw "sc.exe config could not clear the dependencies of service '$name': $($sc.Output)"
        }
        $changed = $true
    }
    if ($current.Description -cne $description) {
        Set-Service -Name $name -Description $description
        $changed = $true
    }
}

# Restart after every failure, and count non-crash failures (exit with an error) as failures too.
$recovery = $null
$nonCrash = 0
if (-not $created) {
    $recovery = $current.FailureActions
    $nonCrash = $current.FailureActionsOnNonCrash
}
$recoveryMatches = $null -ne $recovery -and $recovery.ResetPeriod -eq $resetPeriod -and $nonCrash -eq 1 -and @($recovery.Actions).Length -eq 3 -and @($recovery.Actions | Where-Object { $_.Type -eq 1 -and $_.Delay -eq $restartDelay }).Length -eq 3
if (-not $recoveryMatches) {
    $actions = @('restart', $restartDelay, 'restart', $restartDelay, 'restart', $restartDelay) -join '/'
    $sc = Invoke-WinnodeNative -FilePath 'sc.exe' -ArgumentList @('failure', $name, 'reset=', [string]$resetPeriod, 'actions=', $actions)
    if ($sc.ExitCode -ne 0) {
        throw "sc.exe failure could not set the recovery actions of service '$name': $($sc.Output)"
    }
    $sc = Invoke-WinnodeNative -FilePath 'sc.exe' -ArgumentList @('failureflag', $name, '1')
    if ($sc.ExitCode -ne 0) {
        throw "sc.exe failureflag could not be set for service '$name': $($sc.Output)"
    }
    $changed = $true
}

Write-WinnodeResult @{ created = $created; changed = $changed }
