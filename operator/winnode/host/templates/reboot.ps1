# reboot: restart the host after a delay, recording the reason in the System event log (event 1074)
# as shutdown.exe does. Win32ShutdownTracker takes the reason as data; shutdown.exe /c would need it
# quoted on a command line. The answer carries the current boot id: a different one proves the reboot.
$os = Get-CimInstance -ClassName Win32_OperatingSystem
$bootId = $os.LastBootUpTime.ToUniversalTime().ToString('o', [System.Globalization.CultureInfo]::InvariantCulture)
$comment = [string]$P.reason
if ($comment.Length -gt 500) {
    $comment = $comment.Substring(0, 500)
}
$arguments = @{
    Timeout = [uint32]$P.delay_s
    Comment = $comment
    # SHTDN_REASON_FLAG_PLANNED | SHTDN_REASON_MAJOR_APPLICATION | SHTDN_REASON_MINOR_INSTALLATION
    ReasonCode = [uint32]2147745794
    # 2 = reboot, 4 = force: applications are not asked whether they agree.
    Flags = [int]6
}
$answer = Invoke-CimMethod -InputObject $os -MethodName Win32ShutdownTracker -Arguments $arguments
if ($answer.ReturnValue -ne 0) {
    throw "Win32ShutdownTracker returned $($answer.ReturnValue): the reboot was not scheduled (is another shutdown already pending?)."
}
Write-WinnodeResult @{ boot_id = $bootId }
