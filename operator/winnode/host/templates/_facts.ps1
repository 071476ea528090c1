# --- host facts (facts, observe): what preflight and the desired state need to know about the host ---
# Needs _hns.ps1 (the HNS version) included before it.
function Get-WinnodeContainerdConfig {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Executable,
        [string] $ConfigPath
    )

    # The effective configuration (config.toml merged over the built-in defaults), read from the
    # same file the service was started with. Lines are kept: the operator parses the TOML.
    $ErrorActionPreference = 'Continue'
    $arguments = @()
    if ($ConfigPath) {
        $arguments += @('--config', $ConfigPath)
    }
    $arguments += @('config', 'dump')
    $lines = & $Executable @arguments 2>$null
    if ($LASTEXITCODE -ne 0) {
        return $null
    }
    return (@($lines) | ForEach-Object { [string]$_ }) -join "`n"
}

function Get-WinnodeFacts {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $currentVersion = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
    $ubr = Get-WinnodeProperty -InputObject $currentVersion -Name 'UBR'
    if ($null -eq $ubr) {
        $ubr = 0
    }

    # Server Core and Desktop Experience both have Get-WindowsFeature (ServerManager module); the DISM
    # cmdlet is the fallback where it is missing. The names differ between the two for Hyper-V.
    $features = New-WinnodeMap
    $featureNames = [ordered]@{ 'Containers' = 'Containers'; 'Hyper-V' = 'Microsoft-Hyper-V' }
    $haveServerManager = $null -ne (Get-Command -Name 'Get-WindowsFeature' -ErrorAction SilentlyContinue)
    foreach ($name in $featureNames.Keys) {
        if ($haveServerManager) {
            $feature = Get-WindowsFeature -Name $name -ErrorAction SilentlyContinue
            $features[$name] = ($null -ne $feature) -and [bool]$feature.Installed
        } else {
            $feature = Get-WindowsOptionalFeature -Online -FeatureName $featureNames[$name] -ErrorAction SilentlyContinue
            $features[$name] = ($null -ne $feature) -and ([string]$feature.State -eq 'Enabled')
        }
    }

    $containerd = [ordered]@{ installed = $false; running = $false; version = $null; config_dump = $null }
    $containerdService = Get-CimInstance -ClassName Win32_Service -Filter "Name = 'containerd'"
    if ($null -ne $containerdService) {
        $containerd.installed = $true
        $containerd.running = [string]$containerdService.State -eq 'Running'
        # PathName is a command line: the executable is its first token, quoted or not.
        $commandLine = [string]$containerdService.PathName
        if ($commandLine -match '^\s*"([^"]+)"') {
            $executable = $Matches[1]
        } else {
            $executable = ($commandLine.Trim() -split '\s+')[0]
        }
        if ([System.IO.File]::Exists($executable)) {
            $versionOutput = Invoke-WinnodeNative -FilePath $executable -ArgumentList @('--version')
            # "containerd github.com/containerd/containerd/v2 v2.1.4 <commit>"
            if ($versionOutput.ExitCode -eq 0 -and $versionOutput.Output -match '\sv?(\d+\.\d+\.\d+[^\s]*)') {
                $containerd.version = $Matches[1]
            }
            $configPath = $null
            if ($commandLine -match '\s(?:--config|-c)[=\s]+"([^"]+)"') {
                $configPath = $Matches[1]
            } elseif ($commandLine -match '\s(?:--config|-c)[=\s]+(\S+)') {
                $configPath = $Matches[1]
            }
            $containerd.config_dump = Get-WinnodeContainerdConfig -Executable $executable -ConfigPath $configPath
        }
    }

    $systemDrive = $env:SystemDrive.TrimEnd(':')
    $freeBytes = (Get-PSDrive -Name $systemDrive -PSProvider FileSystem).Free

    # Addresses the kubelet may report: no loopback, no link-local, only those in use.
    $addresses = @(
        Get-NetIPAddress -ErrorAction SilentlyContinue |
            Where-Object { [string]$_.AddressState -eq 'Preferred' } |
            ForEach-Object { [string]$_.IPAddress } |
            Where-Object { $_ -ne '127.0.0.1' -and $_ -ne '::1' -and -not $_.StartsWith('169.254.') -and -not $_.ToLowerInvariant().StartsWith('fe80:') } |
            Sort-Object -Unique
    )

    # The node's own address: IPv4 of the interface that holds the default route (lowest route plus
    # interface metric, as Windows picks it); not a vEthernet or NAT address, not IPv6.
    $defaultRouteIPv4 = $null
    $defaultRoute = Get-NetRoute -AddressFamily IPv4 -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue |
        Sort-Object -Property @{ Expression = { [int]$_.RouteMetric + [int]$_.InterfaceMetric } } |
        Select-Object -First 1
    if ($null -ne $defaultRoute) {
        $defaultRouteIPv4 = Get-NetIPAddress -InterfaceIndex $defaultRoute.ifIndex -AddressFamily IPv4 -ErrorAction SilentlyContinue |
            Where-Object { [string]$_.AddressState -eq 'Preferred' -and -not ([string]$_.IPAddress).StartsWith('169.254.') } |
            ForEach-Object { [string]$_.IPAddress } |
            Select-Object -First 1
    }

    # Adapters, and the one holding the default route: an HNS network binds to it unless the
    # WindowsNetwork names another. Its InterfaceDescription too: HNS reports a network's adapter by it.
    $netAdapters = @(
        Get-NetAdapter -ErrorAction SilentlyContinue | ForEach-Object {
            [ordered]@{ name = [string]$_.Name; description = [string]$_.InterfaceDescription }
        }
    )
    $defaultRouteAdapter = $null
    if ($null -ne $defaultRoute) {
        $defaultRouteAdapter = [string](Get-NetAdapter -InterfaceIndex $defaultRoute.ifIndex -ErrorAction SilentlyContinue).Name
        if ($defaultRouteAdapter -eq '') {
            $defaultRouteAdapter = $null
        }
    }

    # The HNS version decides the API requests are sent in (network/hns.py); None without HNS.
    $hnsVersion = $null
    try {
        $hnsVersion = Get-WinnodeHnsVersion
    } catch {
        $hnsVersion = $null
    }

    # The usual places Windows records that an update, an installer or a rename waits for a reboot.
    $rebootPending = $false
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
        $rebootPending = $true
    }
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
        $rebootPending = $true
    }
    $sessionManager = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager'
    if ($null -ne (Get-WinnodeProperty -InputObject $sessionManager -Name 'PendingFileRenameOperations')) {
        $rebootPending = $true
    }
    $activeName = (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName').ComputerName
    $pendingName = (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName').ComputerName
    if ($activeName -ne $pendingName) {
        $rebootPending = $true
    }

    $invariant = [System.Globalization.CultureInfo]::InvariantCulture
    return @{
        hostname = [System.Net.Dns]::GetHostName()
        os_build = [int]$currentVersion.CurrentBuildNumber
        os_ubr = [int]$ubr
        os_caption = [string]$os.Caption
        edition = [string]$currentVersion.EditionID
        features = $features
        containerd = $containerd
        system_drive_free_bytes = [int64]$freeBytes
        addresses = $addresses
        default_route_ipv4 = $defaultRouteIPv4
        net_adapters = $netAdapters
        default_route_adapter = $defaultRouteAdapter
        hns_version = $hnsVersion
        reboot_pending = $rebootPending
        # The last boot time identifies a boot: it changes exactly when the host restarts.
        boot_id = $os.LastBootUpTime.ToUniversalTime().ToString('o', $invariant)
        utc_now = [DateTime]::UtcNow.ToString('o', $invariant)
        powershell_version = $PSVersionTable.PSVersion.ToString()
    }
}
# --- end of host facts ----------------------------------------------------------------------------
