# stat_files: existence, SHA-256 and size of each file. Read-only.
#winnode:include _files.ps1
Write-WinnodeResult @{ files = (Get-WinnodeFileStats -Paths @($P.paths)) }
