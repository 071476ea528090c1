# hns_network_ensure: an HNS network (L2Bridge, or Overlay for VXLAN), created from the request the
# operator rendered in the API this host's HNS speaks (v1 HNSCall POST /networks/, or hcn v2
# HcnCreateNetwork; network/hns.py). HNS cannot change a network in place, so one that differs is
# deleted and created again, unless keep_existing says to leave any network of that name alone (the
# persistent External network).
# Creating the first L2Bridge or Overlay network on an adapter moves the host's address to a new
# vEthernet adapter: the WinRM connection can drop for a few seconds and this script's answer be
# lost. Running the action again then finds the network as wanted and reports no change.
#winnode:include _hns.ps1
$name = [string]$P.name
$type = [string]$P.type
$addressPrefix = [string]$P.address_prefix
$gateway = [string]$P.gateway
$api = [string]$P.api
$request = [string]$P.request
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
if ($null -ne $adapterName -and $null -eq (Get-NetAdapter -Name $adapterName -ErrorAction SilentlyContinue)) {
    throw "HNS network ${name}: no network adapter is named '${adapterName}' (Get-NetAdapter); set spec.adapterName of the WindowsNetwork to one of: $((Get-NetAdapter | ForEach-Object { $_.Name }) -join ', ')."
}

$existing = @(Get-WinnodeHnsNetwork -Name $name)
if ($existing.Length -gt 1) {
    throw "There are $($existing.Length) HNS networks named ${name}: remove all but one (Get-HnsNetwork | Where-Object Name -ceq '...' | Remove-HnsNetwork)."
}
if ($existing.Length -eq 1) {
    $info = ConvertTo-WinnodeHnsInfo -Network $existing[0]
    $same = [bool]$P.keep_existing
    if (-not $same) {
        $same = $info.type -eq $type -and $info.address_prefix -eq $addressPrefix -and $info.gateway -eq $gateway
        if ($type -eq 'Overlay') {
            $same = $same -and $info.vsid -eq $vsid
        }
        if ($null -ne $adapterName) {
            $same = $same -and (Test-WinnodeAdapterMatch -Reported ([string]$info.adapter_name) -Wanted $adapterName)
        }
        if ($null -ne $vxlanPort) {
            $same = $same -and (Get-WinnodeHnsVxlanPort -Network $existing[0]) -eq $vxlanPort
        }
    }
    if ($same) {
        Write-WinnodeResult @{ id = $info.id; created = $false; changed = $false }
    }
    Invoke-WinnodeHns -Method 'DELETE' -Path ('/networks/' + $info.id) | Out-Null
}

if ($api -eq 'v2') {
    $id = New-WinnodeHcnNetwork -Name $name -Settings $request
} else {
    $id = [string](Invoke-WinnodeHns -Method 'POST' -Path '/networks/' -Request $request).ID
}
Write-WinnodeResult @{ id = $id; created = ($existing.Length -eq 0); changed = $true }
