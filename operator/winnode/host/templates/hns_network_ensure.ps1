# hns_network_ensure: the node's pod network in HNS (L2Bridge, or Overlay for VXLAN). HNS cannot
# change a network in place, so one that differs is deleted and created again.
# Creating the first L2Bridge or Overlay network on an adapter moves the host's address to a new
# vEthernet adapter: the WinRM connection can drop for a few seconds and this script's answer be
# lost. Running the action again then finds the network as wanted and reports no change.
#winnode:include _hns.ps1
$name = [string]$P.name
$type = [string]$P.type
$addressPrefix = [string]$P.address_prefix
$gateway = [string]$P.gateway
$adapterName = $null
if ($null -ne $P.adapter_name) {
    $adapterName = [string]$P.adapter_name
}
$vsid = $null
if ($null -ne $P.vsid) {
    $vsid = [int]$P.vsid
}
$vxlanPort = $null
if ($null -ne $P.vxlan_port) {
    $vxlanPort = [int]$P.vxlan_port
}
if ($type -eq 'Overlay' -and $null -eq $vsid) {
    throw "HNS network ${name}: an Overlay network needs a VSID (VXLAN network id)."
}

$existing = @(Get-WinnodeHnsNetwork -Name $name)
if ($existing.Length -gt 1) {
    throw "There are $($existing.Length) HNS networks named ${name}: remove all but one (Get-HnsNetwork | Where-Object Name -ceq '...' | Remove-HnsNetwork)."
}
if ($existing.Length -eq 1) {
    $info = ConvertTo-WinnodeHnsInfo -Network $existing[0]
    $same = $info.type -eq $type -and $info.address_prefix -eq $addressPrefix -and $info.gateway -eq $gateway
    if ($type -eq 'Overlay') {
        $same = $same -and $info.vsid -eq $vsid
    }
    if ($null -ne $adapterName) {
        $same = $same -and [string]$info.adapter_name -eq $adapterName
    }
    if ($null -ne $vxlanPort) {
        $same = $same -and (Get-WinnodeHnsVxlanPort -Network $existing[0]) -eq $vxlanPort
    }
    if ($same) {
        Write-WinnodeResult @{ id = $info.id; created = $false; changed = $false }
    }
    Invoke-WinnodeHns -Method 'DELETE' -Path ('/networks/' + $info.id) | Out-Null
}

$subnet = [ordered]@{ AddressPrefix = $addressPrefix; GatewayAddress = $gateway }
if ($type -eq 'Overlay') {
    $subnet['Policies'] = @(@{ Type = 'VSID'; VSID = $vsid })
}
$network = [ordered]@{ Name = $name; Type = $type; Subnets = @($subnet) }
if ($null -ne $adapterName) {
    $network['NetworkAdapterName'] = $adapterName
}
if ($type -eq 'Overlay' -and $null -ne $vxlanPort) {
    $network['Policies'] = @(@{ Type = 'VxlanPort'; Port = $vxlanPort })
}
$request = ConvertTo-Json -InputObject $network -Compress -Depth 10
$created = Invoke-WinnodeHns -Method 'POST' -Path '/networks/' -Request $request
Write-WinnodeResult @{ id = [string]$created.ID; created = ($existing.Length -eq 0); changed = $true }
