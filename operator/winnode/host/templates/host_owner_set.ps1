# host_owner_set: claim the host for a WindowsNode (or release it), only while its owner is the expected one.
#winnode:include _owner.ps1
$owner = Get-WinnodeHostOwner
$current = $owner['owner_uid']
$expected = $P.expected_uid
if (($null -ne $current) -and ($current -ne $P.owner_uid) -and ($current -ne $expected)) {
    throw "This host is owned by WindowsNode '$($owner['owner_name'])' (uid $current); not changing its owner."
}
$changed = $current -ne $P.owner_uid
if ($changed) {
    if ($null -eq $P.owner_uid) {
        Remove-Item -LiteralPath $WinnodeOwnerKey -Recurse -Force -ErrorAction SilentlyContinue
    }
    else {
        New-Item -Path $WinnodeOwnerKey -Force | Out-Null
        New-ItemProperty -LiteralPath $WinnodeOwnerKey -Name 'OwnerUid' -Value ([string]$P.owner_uid) -PropertyType String -Force | Out-Null
        New-ItemProperty -LiteralPath $WinnodeOwnerKey -Name 'OwnerName' -Value ([string]$P.owner_name) -PropertyType String -Force | Out-Null
    }
}
$result = Get-WinnodeHostOwner
$result['changed'] = $changed
Write-WinnodeResult $result
