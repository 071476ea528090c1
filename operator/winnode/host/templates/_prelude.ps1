# --- winnode prelude: shared by every action script ----------------------------------------------
# The two lines above are the whole input: an inert header comment for humans and tools, and the
# parameters as one base64 JSON literal (secrets excepted, see the end of the prelude). Nothing below
# is generated; values only ever arrive as data.
Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'
# Progress records are serialized back over WinRM and make Invoke-WebRequest many times slower.
$ProgressPreference = 'SilentlyContinue'
$ConfirmPreference = 'None'

# Whatever stops the script becomes one result line the operator can show, and exit code 1.
trap {
    $failure = @{ ok = $false; error = [string]$_.Exception.Message }
    [Console]::Out.WriteLine('##RESULT## ' + (ConvertTo-WinnodeJson -Value $failure))
    [Console]::Out.Flush()
    exit 1
}

function ConvertTo-WinnodeJson {
    param(
        [AllowNull()]
        [object] $Value
    )

    $json = ConvertTo-Json -InputObject $Value -Compress -Depth 10
    # Escaping everything outside ASCII makes the result line independent of the console code page.
    return [regex]::Replace($json, '[^\x00-\x7F]', { '\u{0:x4}' -f [int][char]$args[0].Value })
}

function Write-WinnodeResult {
    param(
        [Parameter(Mandatory = $true)]
        [System.Collections.IDictionary] $Result
    )

    $Result['ok'] = $true
    [Console]::Out.WriteLine('##RESULT## ' + (ConvertTo-WinnodeJson -Value $Result))
    [Console]::Out.Flush()
    exit 0
}

function Get-WinnodeProperty {
    param(
        [AllowNull()]
        [object] $InputObject,
        [Parameter(Mandatory = $true)]
        [string] $Name
    )

    # Strict mode throws on a missing property; API answers (HNS, registry) omit empty ones.
    if ($null -eq $InputObject) {
        return $null
    }
    $property = $InputObject.PSObject.Properties[$Name]
    if ($null -eq $property) {
        return $null
    }
    return $property.Value
}

function New-WinnodeMap {
    # Result maps are keyed by what the operator sent; PowerShell's own hashtables ignore case.
    # The comma keeps the pipeline from enumerating the (empty) dictionary on its way out.
    return , (New-Object -TypeName 'System.Collections.Generic.Dictionary[string,object]' -ArgumentList ([System.StringComparer]::Ordinal))
}

function Get-WinnodeFileSha256 {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Path
    )

    return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
}

function Install-WinnodeFile {
    # Puts a file in place so that the target is never half-written: $Fill writes a temporary file
    # beside the target (same volume, so the final rename is atomic), its SHA-256 must be $Checksum when
    # one is given, and it is renamed over the target. A target that already holds the same content is
    # left alone, unless -Always (a change the hash does not show, such as an ACL). Ends the script with
    # the result: changed, sha256 and size.
    param(
        [Parameter(Mandatory = $true)]
        [string] $Path,
        [Parameter(Mandatory = $true)]
        [string] $Suffix,
        [Parameter(Mandatory = $true)]
        [scriptblock] $Fill,
        [AllowNull()]
        [string] $Checksum,
        [string] $Source = $Path,
        [switch] $Always
    )

    $directory = [System.IO.Path]::GetDirectoryName($Path)
    [System.IO.Directory]::CreateDirectory($directory) | Out-Null
    $temporary = [System.IO.Path]::Combine($directory, ('.winnode-{0}.{1}' -f [guid]::NewGuid().ToString('N'), $Suffix))
    try {
        & $Fill $temporary
        $actual = Get-WinnodeFileSha256 -Path $temporary
        if ($Checksum -and $actual -ne $Checksum) {
            throw "Checksum mismatch for $Source (-> $Path): expected sha256 $Checksum, actual $actual"
        }
        $size = (Get-Item -LiteralPath $temporary).Length
        if (-not $Always -and [System.IO.File]::Exists($Path) -and (Get-WinnodeFileSha256 -Path $Path) -eq $actual) {
            Write-WinnodeResult @{ changed = $false; sha256 = $actual; size = $size }
        }
        # Fails while the target is an executable that is running: stop its service first.
        if ([System.IO.File]::Exists($Path)) {
            [System.IO.File]::Delete($Path)
        }
        # A rename keeps the temporary file's ACL.
        [System.IO.File]::Move($temporary, $Path)
        Write-WinnodeResult @{ changed = $true; sha256 = $actual; size = $size }
    } finally {
        if ([System.IO.File]::Exists($temporary)) {
            [System.IO.File]::Delete($temporary)
        }
    }
}

function Invoke-WinnodeNative {
    param(
        [Parameter(Mandatory = $true)]
        [string] $FilePath,
        [string[]] $ArgumentList = @()
    )

    # Windows PowerShell turns a native program's stderr lines into error records, which 'Stop'
    # would make fatal; collect all output as text and let the caller judge the exit code.
    $ErrorActionPreference = 'Continue'
    $lines = & $FilePath @ArgumentList 2>&1 | ForEach-Object { [string]$_ }
    return [pscustomobject]@{
        ExitCode = $LASTEXITCODE
        Output = (@($lines) -join ' ').Trim()
    }
}

$P = ConvertFrom-Json -InputObject ([System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($WinnodeParamsB64)))
# Secret fields hold only '<secret:NAME>' in the text above; their values were sent after the script
# on stdin and left by the bootstrap in $WinnodeSecretsB64, as data that is never compiled (and so
# never written to a script-block log).
$secretNames = @($P.PSObject.Properties | Where-Object { $_.Value -is [string] -and $_.Value -ceq ('<secret:' + $_.Name + '>') } | ForEach-Object { $_.Name })
if ($secretNames.Count -gt 0) {
    if (-not (Test-Path -LiteralPath 'variable:WinnodeSecretsB64')) {
        throw "the secret fields $($secretNames -join ', ') did not arrive: no secret section on stdin"
    }
    $secretValues = ConvertFrom-Json -InputObject ([System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($WinnodeSecretsB64)))
    foreach ($secretName in $secretNames) {
        $sent = $secretValues.PSObject.Properties[$secretName]
        if ($null -eq $sent) {
            throw "secret field $secretName did not arrive in the secret section on stdin"
        }
        $P.$secretName = [string]$sent.Value
    }
}
# --- end of prelude ------------------------------------------------------------------------------
