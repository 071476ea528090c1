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

# The ACL is set while the temporary file is still empty; -Always: the content may be the same
# while the ACL is not.
Install-WinnodeFile -Path $target -Checksum $sha256 -Suffix 'tmp' -Always -Fill {
    param(
        [string] $temporary
    )

    [System.IO.File]::WriteAllBytes($temporary, [byte[]]@())
    if ($secret) {
        $grant = @('/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)')
        $icacls = Invoke-WinnodeNative -FilePath 'icacls.exe' -ArgumentList (@($temporary) + $grant)
        if ($icacls.ExitCode -ne 0) {
            throw "icacls could not restrict access to ${temporary}: $($icacls.Output)"
        }
    }
    [System.IO.File]::WriteAllBytes($temporary, $bytes)
}
