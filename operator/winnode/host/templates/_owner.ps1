# --- shared by host_owner_query and host_owner_set: the host's identity and its owning WindowsNode ---
$WinnodeOwnerKey = 'HKLM:\SOFTWARE\winnode'

function Get-WinnodeHostOwner {
    $guid = (Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Cryptography' -Name 'MachineGuid').MachineGuid
    $uid = $null
    $name = $null
    if (Test-Path -LiteralPath $WinnodeOwnerKey) {
        $values = Get-ItemProperty -LiteralPath $WinnodeOwnerKey
        $uid = Get-WinnodeProperty -InputObject $values -Name 'OwnerUid'
        $name = Get-WinnodeProperty -InputObject $values -Name 'OwnerName'
    }
    return @{ machine_guid = [string]$guid; owner_uid = $uid; owner_name = $name }
}
