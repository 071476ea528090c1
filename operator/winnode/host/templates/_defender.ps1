# --- Microsoft Defender state (defender_exclusions_ensure, observe) --------------------------------
function Test-WinnodeDefenderRunning {
    $status = Get-MpComputerStatus -ErrorAction SilentlyContinue
    return $null -ne $status -and [bool]$status.AMServiceEnabled
}

function Get-WinnodeDefenderExcluded {
    param(
        [AllowEmptyCollection()]
        [string[]] $Processes = @()
    )

    # Those of $Processes that are excluded now (Defender compares process paths without case).
    $current = @((Get-MpPreference).ExclusionProcess | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
    return @($Processes | Where-Object { $wanted = $_; @($current | Where-Object { $_ -ieq $wanted }).Count -gt 0 })
}
# --- end of Microsoft Defender state ---------------------------------------------------------------
