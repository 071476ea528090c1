# firewall_rule_ensure: an allow rule for one local port, created or brought to the wanted settings.
$name = [string]$P.name
$displayName = [string]$P.display_name
$protocol = [string]$P.protocol
$localPort = [string]$P.local_port
$direction = [string]$P.direction
# -Name of the NetSecurity cmdlets takes wildcards; a rule name must match exactly one rule.
if ([System.Management.Automation.WildcardPattern]::ContainsWildcardCharacters($name)) {
    throw "Firewall rule name '$name' contains wildcard characters (* ? [ ])."
}

$rule = Get-NetFirewallRule -Name $name -ErrorAction SilentlyContinue
if ($null -eq $rule) {
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

$ports = $rule | Get-NetFirewallPortFilter
$same = $rule.DisplayName -ceq $displayName -and [string]$rule.Direction -eq $direction -and [string]$rule.Action -eq 'Allow' -and [string]$rule.Enabled -eq 'True' -and [string]$ports.Protocol -eq $protocol -and (@($ports.LocalPort) -join ',') -eq $localPort
if ($same) {
    Write-WinnodeResult @{ changed = $false }
}
$rule | Set-NetFirewallRule -NewDisplayName $displayName -Direction $direction -Protocol $protocol -LocalPort $localPort -Action 'Allow' -Enabled 'True'
Write-WinnodeResult @{ changed = $true }
