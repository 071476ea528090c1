# firewall_rule_remove: delete the firewall rule with this name.
$name = [string]$P.name
if ([System.Management.Automation.WildcardPattern]::ContainsWildcardCharacters($name)) {
    throw "Firewall rule name '$name' contains wildcard characters (* ? [ ])."
}
$rule = Get-NetFirewallRule -Name $name -ErrorAction SilentlyContinue
if ($null -eq $rule) {
    Write-WinnodeResult @{ removed = $false }
}
$rule | Remove-NetFirewallRule
Write-WinnodeResult @{ removed = $true }
