# host_owner_query: the host's MachineGuid and the WindowsNode that owns it, if any. Read-only.
#winnode:include _owner.ps1
$owner = Get-WinnodeHostOwner
$owner['changed'] = $false
Write-WinnodeResult $owner
