# write_file: UTF-8 text without a byte-order mark, written to a temporary file beside the target and
# renamed into place. A secret file is readable by SYSTEM and Administrators only; its ACL is set
# while the temporary file is still empty, so the content is never readable by anyone else.
$target = [System.IO.Path]::GetFullPath([string]$P.path)
$secret = [bool]$P.secret
$bytes = (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false).GetBytes([string]$P.content)
$hasher = [System.Security.Cryptography.SHA256]::Create()
try {
    $sha256 = ([System.BitConverter]::ToString($hasher.ComputeHash($bytes)) -replace '-', '').ToLowerInvariant()
} finally {
    $hasher.Dispose()
}
$adminSids = @('S-1-5-18', 'S-1-5-32-544')

function Test-WinnodeRestrictedAcl {
    param(
        [Parameter(Mandatory = $true)]
        [string] $Path
    )

    $acl = Get-Acl -LiteralPath $Path
    if (-not $acl.AreAccessRulesProtected) {
        return $false
    }
    foreach ($rule in $acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])) {
        if ($adminSids -notcontains $rule.IdentityReference.Value) {
            return $false
        }
    }
    return $true
}

if ([System.IO.File]::Exists($target)) {
    if ((Get-WinnodeFileSha256 -Path $target) -eq $sha256 -and (Test-WinnodeRestrictedAcl -Path $target) -eq $secret) {
        Write-WinnodeResult @{ changed = $false; sha256 = $sha256; size = $bytes.Length }
    }
}

$directory = [System.IO.Path]::GetDirectoryName($target)
[System.IO.Directory]::CreateDirectory($directory) | Out-Null
$temporary = [System.IO.Path]::Combine($directory, ('.winnode-{0}.tmp' -f [guid]::NewGuid().ToString('N')))
try {
    [System.IO.File]::WriteAllBytes($temporary, [byte[]]@())
    if ($secret) {
        $grant = @('/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)')
        $icacls = Invoke-WinnodeNative -FilePath 'icacls.exe' -ArgumentList (@($temporary) + $grant)
        if ($icacls.ExitCode -ne 0) {
            throw "icacls could not restrict access to ${temporary}: $($icacls.Output)"
        }
    }
    [System.IO.File]::WriteAllBytes($temporary, $bytes)
    if ([System.IO.File]::Exists($target)) {
        [System.IO.File]::Delete($target)
    }
    # A rename keeps the temporary file's ACL: restricted for secrets, inherited otherwise.
    [System.IO.File]::Move($temporary, $target)
} finally {
    if ([System.IO.File]::Exists($temporary)) {
        [System.IO.File]::Delete($temporary)
    }
}

Write-WinnodeResult @{ changed = $true; sha256 = $sha256; size = $bytes.Length }
