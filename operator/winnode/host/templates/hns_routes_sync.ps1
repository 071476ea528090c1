# hns_routes_sync: this node's routes to every peer's pod subnet, made exactly what the operator
# computed from the cluster's Nodes. Routes inside managed_prefixes that are not wanted any more are
# removed; others are never touched.
# overlay: RemoteSubnetRoute policies of the HNS network (hcn v2 API, computenetwork.dll), as
#          flannel's Windows vxlan backend programs them (pkg/backend/vxlan/vxlan_network_windows.go),
#          plus the HostRoute policy so the host reaches its own pods.
# l2bridge: a host-attached endpoint at the pods' gateway (.2: win-bridge's processEndpointArgs),
#          forwarding on, and host routes to the peers (flannel pkg/backend/hostgw/hostgw_windows.go).
#winnode:include _hns.ps1
$name = [string]$P.network
$managed = @($P.managed_prefixes | ForEach-Object { [string]$_ })
$added = New-Object System.Collections.Generic.List[string]
$removed = New-Object System.Collections.Generic.List[string]

function Test-WinnodeManagedPrefix {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Prefix
    )

    $parts = $Prefix -split '/'
    if ($parts.Length -ne 2) {
        return $false
    }
    $address = [System.Net.IPAddress]::Parse($parts[0]).GetAddressBytes()
    foreach ($scope in $managed) {
        $scopeParts = $scope -split '/'
        $scopeBits = [int]$scopeParts[1]
        if ([int]$parts[1] -lt $scopeBits) {
            continue
        }
        $scopeBytes = [System.Net.IPAddress]::Parse($scopeParts[0]).GetAddressBytes()
        $inside = $true
        for ($bit = 0; $bit -lt $scopeBits; $bit++) {
            $byte = [int][math]::Floor($bit / 8)
            $mask = 0x80 -shr ($bit % 8)
            if (($address[$byte] -band $mask) -ne ($scopeBytes[$byte] -band $mask)) {
                $inside = $false
                break
            }
        }
        if ($inside) {
            return $true
        }
    }
    return $false
}

$existing = @(Get-WinnodeHnsNetwork -Name $name)
if ($existing.Length -ne 1) {
    throw "HNS network ${name} does not exist on this host (found $($existing.Length)); winnode creates it when it configures the node."
}
$networkId = [string]$existing[0].ID
$networkType = [string](Get-WinnodeProperty -InputObject $existing[0] -Name 'Type')
$drMac = $null
$providerAddress = $null

if ($networkType -eq 'Overlay') {
    if ($null -eq ('Winnode.Hcn' -as [type])) {
        Add-Type -Namespace 'Winnode' -Name 'Hcn' -MemberDefinition @'
[DllImport("computenetwork.dll")]
public static extern int HcnOpenNetwork(ref Guid id, out IntPtr network, [MarshalAs(UnmanagedType.LPWStr)] out string errorRecord);
[DllImport("computenetwork.dll")]
public static extern int HcnQueryNetworkProperties(IntPtr network, [MarshalAs(UnmanagedType.LPWStr)] string query, [MarshalAs(UnmanagedType.LPWStr)] out string properties, [MarshalAs(UnmanagedType.LPWStr)] out string errorRecord);
[DllImport("computenetwork.dll")]
public static extern int HcnModifyNetwork(IntPtr network, [MarshalAs(UnmanagedType.LPWStr)] string settings, [MarshalAs(UnmanagedType.LPWStr)] out string errorRecord);
[DllImport("computenetwork.dll")]
public static extern int HcnCloseNetwork(IntPtr network);
'@
    }
    $guid = [Guid]$networkId
    $handle = [IntPtr]::Zero
    $errorRecord = $null
    $hr = [Winnode.Hcn]::HcnOpenNetwork([ref] $guid, [ref] $handle, [ref] $errorRecord)
    if ($hr -ne 0) {
        throw ('HcnOpenNetwork({0}) failed with HRESULT 0x{1:X8}: {2}' -f $name, $hr, $errorRecord)
    }
    try {
        $properties = $null
        $hr = [Winnode.Hcn]::HcnQueryNetworkProperties($handle, '{"SchemaVersion":{"Major":2,"Minor":0}}', [ref] $properties, [ref] $errorRecord)
        if ($hr -ne 0) {
            throw ('HcnQueryNetworkProperties({0}) failed with HRESULT 0x{1:X8}: {2}' -f $name, $hr, $errorRecord)
        }
        $network = ConvertFrom-Json -InputObject $properties
        $have = @{}
        $haveHostRoute = $false
        foreach ($policy in @(Get-WinnodeProperty -InputObject $network -Name 'Policies')) {
            $type = [string](Get-WinnodeProperty -InputObject $policy -Name 'Type')
            $settings = Get-WinnodeProperty -InputObject $policy -Name 'Settings'
            if ($type -eq 'RemoteSubnetRoute') {
                $have[[string]$settings.DestinationPrefix] = $settings
            } elseif ($type -eq 'HostRoute') {
                $haveHostRoute = $true
            } elseif ($type -eq 'DrMacAddress') {
                $drMac = [string]$settings.Address
            } elseif ($type -eq 'ProviderAddress') {
                $providerAddress = [string]$settings.ProviderAddress
            }
        }
        $want = @{}
        foreach ($route in @($P.remote_subnet_routes)) {
            $want[[string]$route.destination_prefix] = [ordered]@{
                DestinationPrefix = [string]$route.destination_prefix
                IsolationId = [int]$route.isolation_id
                ProviderAddress = [string]$route.provider_address
                DistributedRouterMacAddress = [string]$route.distributed_router_mac
            }
        }
        $toRemove = @()
        foreach ($prefix in @($have.Keys)) {
            $current = $have[$prefix]
            $wanted = $want[$prefix]
            $same = $null -ne $wanted -and [string]$current.ProviderAddress -eq $wanted.ProviderAddress -and [string]$current.DistributedRouterMacAddress -eq $wanted.DistributedRouterMacAddress -and [int]$current.IsolationId -eq $wanted.IsolationId
            if ($same) {
                $want.Remove($prefix)
            } elseif (Test-WinnodeManagedPrefix -Prefix $prefix) {
                $toRemove += @{ Type = 'RemoteSubnetRoute'; Settings = $current }
                $removed.Add("RemoteSubnetRoute $prefix")
            }
        }
        $toAdd = @()
        foreach ($prefix in @($want.Keys | Sort-Object)) {
            $toAdd += @{ Type = 'RemoteSubnetRoute'; Settings = $want[$prefix] }
            $added.Add("RemoteSubnetRoute $prefix via $($want[$prefix].ProviderAddress)")
        }
        if ([bool]$P.host_route -and -not $haveHostRoute) {
            $toAdd += @{ Type = 'HostRoute'; Settings = @{} }
            $added.Add('HostRoute')
        }
        # hcn ModifyNetworkSettingRequest: ResourceType Policy, RequestType Remove/Add, Settings a PolicyNetworkRequest.
        foreach ($change in @(@{ kind = 'Remove'; policies = $toRemove }, @{ kind = 'Add'; policies = $toAdd })) {
            if ($change.policies.Length -eq 0) {
                continue
            }
            $request = ConvertTo-Json -Compress -Depth 10 -InputObject ([ordered]@{
                    ResourceType = 'Policy'
                    RequestType = $change.kind
                    Settings = @{ Policies = @($change.policies) }
                })
            $hr = [Winnode.Hcn]::HcnModifyNetwork($handle, $request, [ref] $errorRecord)
            if ($hr -ne 0) {
                throw ('HcnModifyNetwork({0}, {1} policies) failed with HRESULT 0x{2:X8}: {3}' -f $name, $change.kind, $hr, $errorRecord)
            }
        }
    } finally {
        [Winnode.Hcn]::HcnCloseNetwork($handle) | Out-Null
    }
} elseif ($networkType -eq 'L2Bridge') {
    $bridgeIp = [string]$P.bridge_endpoint_ip
    $endpointName = "${name}_host"
    $endpoint = @(Invoke-WinnodeHns -Method 'GET' -Path '/endpoints/' | Where-Object { [string](Get-WinnodeProperty -InputObject $_ -Name 'VirtualNetwork') -eq $networkId -and [string](Get-WinnodeProperty -InputObject $_ -Name 'IPAddress') -eq $bridgeIp }) | Select-Object -First 1
    if ($null -eq $endpoint) {
        $request = ConvertTo-Json -Compress -InputObject ([ordered]@{ Name = $endpointName; VirtualNetwork = $networkId; IPAddress = $bridgeIp })
        $endpoint = Invoke-WinnodeHns -Method 'POST' -Path '/endpoints/' -Request $request
        # hcsshim HNSEndpoint.HostAttach: the host's default compartment (1).
        Invoke-WinnodeHns -Method 'POST' -Path ('/endpoints/' + [string]$endpoint.ID + '/attach') -Request '{"SystemType":"Host","CompartmentId":1}' | Out-Null
        $added.Add("host endpoint $bridgeIp")
    }
    $endpointAlias = "vEthernet ($endpointName)"
    $external = Get-NetRoute -DestinationPrefix '0.0.0.0/0' -AddressFamily IPv4 -ErrorAction SilentlyContinue | Sort-Object -Property RouteMetric | Select-Object -First 1
    if ($null -eq $external) {
        throw 'This host has no IPv4 default route: winnode routes pod traffic to peers through the interface that holds it.'
    }
    foreach ($alias in @($endpointAlias, [string]$external.InterfaceAlias)) {
        $interface = Get-NetIPInterface -InterfaceAlias $alias -AddressFamily IPv4 -ErrorAction SilentlyContinue
        if ($null -ne $interface -and [string]$interface.Forwarding -ne 'Enabled') {
            Set-NetIPInterface -InterfaceAlias $alias -AddressFamily IPv4 -Forwarding Enabled
            $added.Add("forwarding on $alias")
        }
    }
    $want = @{}
    foreach ($route in @($P.net_routes)) {
        $want[[string]$route.destination_prefix] = [string]$route.next_hop
    }
    foreach ($route in @(Get-NetRoute -AddressFamily IPv4 -InterfaceIndex $external.InterfaceIndex -ErrorAction SilentlyContinue)) {
        $prefix = [string]$route.DestinationPrefix
        if ($want.ContainsKey($prefix) -and $want[$prefix] -eq [string]$route.NextHop) {
            $want.Remove($prefix)
        } elseif ($prefix -ne '0.0.0.0/0' -and (Test-WinnodeManagedPrefix -Prefix $prefix)) {
            Remove-NetRoute -InputObject $route -Confirm:$false
            $removed.Add("route $prefix")
        }
    }
    foreach ($prefix in @($want.Keys | Sort-Object)) {
        New-NetRoute -DestinationPrefix $prefix -NextHop $want[$prefix] -InterfaceIndex $external.InterfaceIndex -PolicyStore ActiveStore | Out-Null
        $added.Add("route $prefix via $($want[$prefix])")
    }
} else {
    throw "HNS network ${name} has type ${networkType}; winnode routes only its L2Bridge and Overlay pod networks."
}

Write-WinnodeResult @{ added = @($added); removed = @($removed); distributed_router_mac = $drMac; provider_address = $providerAddress }
