# --- firewall rule state (firewall_rule_ensure, observe) -------------------------------------------
function Assert-WinnodeFirewallRuleName {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name
    )

    # -Name of the NetSecurity cmdlets takes wildcards; a rule name must match exactly one rule.
    if ([System.Management.Automation.WildcardPattern]::ContainsWildcardCharacters($Name)) {
        throw "Firewall rule name '$Name' contains wildcard characters (* ? [ ])."
    }
}

function Get-WinnodeFirewallRuleInfo {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Name
    )

    # The settings winnode manages on a rule, as the operator compares them with what it wants.
    Assert-WinnodeFirewallRuleName -Name $Name
    $rule = Get-NetFirewallRule -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $rule) {
        return @{ exists = $false }
    }
    $ports = $rule | Get-NetFirewallPortFilter
    return @{
        exists = $true
        display_name = [string]$rule.DisplayName
        direction = [string]$rule.Direction
        action = [string]$rule.Action
        enabled = [string]$rule.Enabled -eq 'True'
        protocol = [string]$ports.Protocol
        local_port = (@($ports.LocalPort) -join ',')
    }
}
# --- end of firewall rule state --------------------------------------------------------------------
