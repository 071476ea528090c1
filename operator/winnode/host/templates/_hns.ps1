# --- HNS helpers (hns_network_* actions) ----------------------------------------------------------
# The Host Network Service is driven through its JSON API (HNS v1: GET/POST/DELETE on /networks),
# reached through vmcompute.dll's HNSCall, the same entry point the SDN repository's hns.psm1 uses.
# That needs nothing on the host beyond the Containers feature: the HostNetworkingService module
# and hns.psm1 are not present on every Windows Server release, and their parameters differ.
if ($null -eq (Get-Service -Name 'hns' -ErrorAction SilentlyContinue)) {
    throw 'The Host Network Service (hns) is not available: the Containers feature is not installed (Install-WindowsFeature -Name Containers, then reboot).'
}

if ($null -eq ('Winnode.Hns' -as [type])) {
    Add-Type -Namespace 'Winnode' -Name 'Hns' -MemberDefinition @'
[DllImport("vmcompute.dll")]
public static extern uint HNSCall(
    [MarshalAs(UnmanagedType.LPWStr)] string method,
    [MarshalAs(UnmanagedType.LPWStr)] string path,
    [MarshalAs(UnmanagedType.LPWStr)] string request,
    [MarshalAs(UnmanagedType.LPWStr)] out string response);
'@
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
            return [int](Get-WinnodeProperty -InputObject $policy -Name 'Port')
        }
    }
    return $null
}
# --- end of HNS helpers ---------------------------------------------------------------------------
