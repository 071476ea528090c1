# ensure_directories: create each directory with its missing parents; report the ones that were new.
$created = New-Object -TypeName 'System.Collections.Generic.List[string]'
foreach ($path in @($P.paths)) {
    $full = [System.IO.Path]::GetFullPath([string]$path)
    if ([System.IO.Directory]::Exists($full)) {
        continue
    }
    if ([System.IO.File]::Exists($full)) {
        throw "Cannot create directory ${full}: a file with that name exists."
    }
    [System.IO.Directory]::CreateDirectory($full) | Out-Null
    $created.Add([string]$path)
}

Write-WinnodeResult @{ created = @($created) }
