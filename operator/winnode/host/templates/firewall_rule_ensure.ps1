# firewall_rule_ensure: an allow rule for one local port, created or brought to the wanted settings.
#winnode:include _firewall.ps1
$name = [string]$P.name
$displayName = [string]$P.display_name
$protocol = [string]$P.protocol
$localPort = [string]$P.local_port
$direction = [string]$P.direction

$current = Get-WinnodeFirewallRuleInfo -Name $name
if (-not $current.exists) {
    $newRule = @{
        Name = $name
        DisplayName = $displayName
        Description = 'Managed by winnode.'
        Group = 'winnode'
        Direction = $direction
        Protocol = $protocol
        LocalPort = $localPort
        Action = 'Allow'
        Enabled = 'True'
        Profile = 'Any'
    }
    New-NetFirewallRule @newRule | Out-Null
    Write-WinnodeResult @{ changed = $true }
}

$same = $current.display_name -ceq $displayName -and $current.direction -eq $direction -and $current.action -eq 'Allow' -and $current.enabled -and $current.protocol -eq $protocol -and $current.local_port -eq $localPort
if ($same) {
    Write-WinnodeResult @{ changed = $false }
}
Get-NetFirewallRule -Name $name | Set-NetFirewallRule -NewDisplayName $displayName -Direction $direction -Protocol $protocol -LocalPort $localPort -Action 'Allow' -Enabled 'True'
Write-WinnodeResult @{ changed = $true }
