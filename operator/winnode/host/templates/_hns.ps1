# --- HNS helpers (hns_network_* actions, facts) ----------------------------------------------------
# The Host Network Service is driven through its JSON API (HNS v1: GET/POST/DELETE on /networks),
# reached through vmcompute.dll's HNSCall, the same entry point the SDN repository's hns.psm1 uses,
# and through computenetwork.dll's hcn API (v2) where the host's HNS speaks it (9.2 and later). That
# needs nothing on the host beyond the Containers feature: the HostNetworkingService module and
# hns.psm1 are not present on every Windows Server release, and their parameters differ.
# HNSCall returns an HRESULT and hands the response back through an out parameter (hcsshim
# internal/hns/zsyscall_windows.go _hnsCall at v0.12.9): declared so, a failed call is reported with its
# code instead of surfacing later as a null response.
if ($null -eq ('Winnode.Hns' -as [type])) {
    Add-Type -Namespace 'Winnode' -Name 'Hns' -MemberDefinition @'
[DllImport("vmcompute.dll")]
public static extern uint HNSCall(
    [MarshalAs(UnmanagedType.LPWStr)] string method,
    [MarshalAs(UnmanagedType.LPWStr)] string path,
    [MarshalAs(UnmanagedType.LPWStr)] string request,
    [MarshalAs(UnmanagedType.LPWStr)] out string response);
[DllImport("computenetwork.dll")]
public static extern int HcnCreateNetwork(ref Guid id, [MarshalAs(UnmanagedType.LPWStr)] string settings, out IntPtr network, [MarshalAs(UnmanagedType.LPWStr)] out string errorRecord);
[DllImport("computenetwork.dll")]
public static extern int HcnCloseNetwork(IntPtr network);
'@
}

function Assert-WinnodeHnsService {
    if ($null -eq (Get-Service -Name 'hns' -ErrorAction SilentlyContinue)) {
        throw 'The Host Network Service (hns) is not available: the Containers feature is not installed (Install-WindowsFeature -Name Containers, then reboot).'
    }
}

function Invoke-WinnodeHns {
    param(
        [Parameter(Mandatory = $true)]
        [ValidateSet('GET', 'POST', 'DELETE')]
        [string] $Method,
        [Parameter(Mandatory = $true)]
        [string] $Path,
        [string] $Request = ''
    )

    Assert-WinnodeHnsService
    $response = $null
    # HNSCall returns an HRESULT (hcsshim internal/hns: hnsCall checks it before the response).
    $hr = [Winnode.Hns]::HNSCall($Method, $Path, $Request, [ref] $response)
    if ($hr -ne 0) {
        throw ('HNS {0} {1} failed with HRESULT 0x{2:X8}: {3}' -f $Method, $Path, $hr, ([System.ComponentModel.Win32Exception][int]$hr).Message)
    }
    if ([string]::IsNullOrEmpty($response)) {
        throw ('HNS {0} {1} returned no response.' -f $Method, $Path)
    }
    $answer = ConvertFrom-Json -InputObject $response
    if (-not [bool](Get-WinnodeProperty -InputObject $answer -Name 'Success')) {
        throw ('HNS {0} {1} failed: {2}' -f $Method, $Path, (Get-WinnodeProperty -InputObject $answer -Name 'Error'))
    }
    return Get-WinnodeProperty -InputObject $answer -Name 'Output'
}

function Get-WinnodeHnsNetwork {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name
    )

    # HNS network names are case-sensitive. Callers wrap the call in @(): PowerShell unrolls a
    # function's output, so one network would otherwise arrive as a single object.
    return Invoke-WinnodeHns -Method 'GET' -Path '/networks/' | Where-Object { [string](Get-WinnodeProperty -InputObject $_ -Name 'Name') -ceq $Name }
}

function ConvertTo-WinnodeHnsInfo {
    param(
        [Parameter(Mandatory = $true)]
        [object] $Network
    )

    $info = [ordered]@{
        exists = $true
        id = [string]$Network.ID
        type = $null
        address_prefix = $null
        gateway = $null
        adapter_name = Get-WinnodeProperty -InputObject $Network -Name 'NetworkAdapterName'
        vsid = $null
    }
    $type = [string](Get-WinnodeProperty -InputObject $Network -Name 'Type')
    if ($type -eq 'L2Bridge' -or $type -eq 'Overlay') {
        $info.type = $type
    }
    $subnet = @(Get-WinnodeProperty -InputObject $Network -Name 'Subnets') | Select-Object -First 1
    if ($null -ne $subnet) {
        $info.address_prefix = Get-WinnodeProperty -InputObject $subnet -Name 'AddressPrefix'
        $info.gateway = Get-WinnodeProperty -InputObject $subnet -Name 'GatewayAddress'
        foreach ($policy in @(Get-WinnodeProperty -InputObject $subnet -Name 'Policies')) {
            if ([string](Get-WinnodeProperty -InputObject $policy -Name 'Type') -eq 'VSID') {
                $info.vsid = [int](Get-WinnodeProperty -InputObject $policy -Name 'VSID')
            }
        }
    }
    return $info
}

function Get-WinnodeHnsVxlanPort {
    param(
        [Parameter(Mandatory = $true)]
        [object] $Network
    )

    foreach ($policy in @(Get-WinnodeProperty -InputObject $Network -Name 'Policies')) {
        if ([string](Get-WinnodeProperty -InputObject $policy -Name 'Type') -eq 'VxlanPort') {
            # hcn's shape ({"Type", "Settings": {"Port"}}); a flat Port where HNS reports it so.
            $settings = Get-WinnodeProperty -InputObject $policy -Name 'Settings'
            if ($null -ne $settings) {
                return [int](Get-WinnodeProperty -InputObject $settings -Name 'Port')
            }
            return [int](Get-WinnodeProperty -InputObject $policy -Name 'Port')
        }
    }
    return $null
}
function Get-WinnodeHnsNetworkInfos {
    param(
        [AllowEmptyCollection()]
        [object[]] $Names = @()
    )

    # What HNS knows about each named network, keyed by the name as the operator sent it.
    $networks = New-WinnodeMap
    foreach ($requested in $Names) {
        $name = [string]$requested
        $found = @(Get-WinnodeHnsNetwork -Name $name)
        if ($found.Length -eq 0) {
            $networks[$name] = @{ exists = $false }
        } else {
            $networks[$name] = ConvertTo-WinnodeHnsInfo -Network $found[0]
        }
    }
    return , $networks
}
function New-WinnodeHcnNetwork {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name,
        [Parameter(Mandatory = $true)]
        [string] $Settings
    )

    # hcsshim hcn/hcnnetwork.go createNetwork: a new GUID, the HostComputeNetwork JSON, an HRESULT and
    # an error record (JSON) on failure.
    Assert-WinnodeHnsService
    $id = [Guid]::NewGuid()
    $handle = [IntPtr]::Zero
    $errorRecord = $null
    $hr = [Winnode.Hns]::HcnCreateNetwork([ref] $id, $Settings, [ref] $handle, [ref] $errorRecord)
    if ($hr -ne 0) {
        throw ('HcnCreateNetwork({0}) failed with HRESULT 0x{1:X8}: {2}' -f $Name, $hr, $errorRecord)
    }
    [Winnode.Hns]::HcnCloseNetwork($handle) | Out-Null
    return $id.ToString().ToUpperInvariant()
}

function Get-WinnodeHnsVersion {
    # GET /globals/version: {"Major": 9, "Minor": 5} (hcsshim hcn/hcnglobals.go GetGlobals).
    $version = Invoke-WinnodeHns -Method 'GET' -Path '/globals/version'
    return [ordered]@{
        major = [int](Get-WinnodeProperty -InputObject $version -Name 'Major')
        minor = [int](Get-WinnodeProperty -InputObject $version -Name 'Minor')
    }
}

function Test-WinnodeAdapterMatch {
    param(
        [string] $Reported,
        [Parameter(Mandatory = $true)]
        [string] $Wanted
    )

    # HNS reports a network's adapter by the InterfaceDescription where it was given the name:
    # either form of the wanted adapter matches.
    if ([string]::IsNullOrEmpty($Reported)) {
        return $false
    }
    if ($Reported -eq $Wanted) {
        return $true
    }
    $adapter = Get-NetAdapter -Name $Wanted -ErrorAction SilentlyContinue
    return $null -ne $adapter -and $Reported -eq [string]$adapter.InterfaceDescription
}
# --- end of HNS helpers ---------------------------------------------------------------------------
