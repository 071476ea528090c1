# facts: what preflight checks need to know about the host. Read-only.
#winnode:include _hns.ps1
#winnode:include _facts.ps1
Write-WinnodeResult (Get-WinnodeFacts)
