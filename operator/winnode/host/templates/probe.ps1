# probe: which paths exist, which TCP endpoints and URLs this host reaches. Read-only.
$timeoutSeconds = [int]$P.timeout_s
$paths = New-WinnodeMap
foreach ($requested in @($P.paths)) {
    $path = [string]$requested
    $paths[$path] = [bool](Test-Path -LiteralPath $path)
}
$tcp = New-WinnodeMap
foreach ($requested in @($P.tcp)) {
    $key = [string]$requested
    $split = $key.LastIndexOf(':')
    $port = 0
    if ($split -lt 1 -or -not [int]::TryParse($key.Substring($split + 1), [ref]$port)) {
        $tcp[$key] = @{ ok = $false; error = 'not host:port' }
        continue
    }
    $address = $key.Substring(0, $split).Trim('[', ']')
    $client = New-Object -TypeName 'System.Net.Sockets.TcpClient'
    try {
        $pending = $client.ConnectAsync($address, $port)
        if ($pending.Wait($timeoutSeconds * 1000) -and $client.Connected) {
            $tcp[$key] = @{ ok = $true }
        }
        else {
            $tcp[$key] = @{ ok = $false; error = "no connection within $timeoutSeconds s" }
        }
    }
    catch {
        $tcp[$key] = @{ ok = $false; error = [string]$_.Exception.GetBaseException().Message }
    }
    finally {
        $client.Dispose()
    }
}
$http = New-WinnodeMap
foreach ($requested in @($P.http)) {
    $url = [string]$requested
    try {
        $response = Invoke-WebRequest -Uri $url -UseBasicParsing -Method Get -TimeoutSec $timeoutSeconds
        $http[$url] = @{ status = [int]$response.StatusCode }
    }
    catch {
        $status = $null
        $answer = Get-WinnodeProperty -InputObject $_.Exception -Name 'Response'
        if ($null -ne $answer) {
            $status = [int]$answer.StatusCode
        }
        $http[$url] = @{ status = $status; error = [string]$_.Exception.Message }
    }
}
Write-WinnodeResult @{ paths = $paths; tcp = $tcp; http = $http }
