# remove_path: delete a file, or a directory (with its contents only when recurse is set; an
# if_empty directory that holds anything stays).
$target = [System.IO.Path]::GetFullPath([string]$P.path)
$recurse = [bool]$P.recurse
if ([System.IO.File]::Exists($target)) {
    # Fails while the file is an executable that is running: stop its service first.
    [System.IO.File]::Delete($target)
    Write-WinnodeResult @{ removed = $true }
}
if (-not [System.IO.Directory]::Exists($target)) {
    Write-WinnodeResult @{ removed = $false }
}
if ([System.IO.Path]::GetPathRoot($target) -eq $target) {
    throw "Refusing to remove the root of drive $target."
}
if (-not $recurse -and @([System.IO.Directory]::EnumerateFileSystemEntries($target)).Length -gt 0) {
    if ([bool]$P.if_empty) {
        Write-WinnodeResult @{ removed = $false }
    }
    throw "The directory $target is not empty and recurse was not requested."
}
# Directory.Delete removes junctions and symbolic links without following them.
[System.IO.Directory]::Delete($target, $recurse)
Write-WinnodeResult @{ removed = $true }
