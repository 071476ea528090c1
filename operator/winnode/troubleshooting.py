"""Every condition reason winnode can write, what it means and what to do: the README's troubleshooting
table is generated from this (winnode.deploy.docgen), and tests/unit/test_docs.py reads the source for
reasons this table lacks.

A reason is the CamelCase word in a condition (`kubectl describe wn NAME`), in status.lastError and in
the Warning Event of a failed step. Host failures of a script are named after its action
(`ServiceStartFailed`, ...): those entries come from winnode.host.actions, so a new action is covered.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    name: str
    meaning: str
    action: str  # what an admin does; "" when nothing is wrong


OK = ""

# Reasons that say things are fine (or progressing): listed so every reason a user sees is explained.
_HEALTHY: dict[str, str] = {
    "Applied": "the WindowsNetwork is applied on every node that names it",
    "Configured": "the HNS network and CNI configuration are in place",
    "Connected": "WinRM on the host answers and the login worked",
    "Drained": "the node was drained (no pods left to evict)",
    "Installed": "kubelet and kube-proxy of the wanted version are on the host, checksums verified",
    "KubeletReady": "the Node reports Ready",
    "ListenerAnswered": "the WinRM listener answers (the login itself may still fail: see Authenticated)",
    "LoggedIn": "the credentials were accepted by the host",
    "NamedByWindowsNodes": "the WindowsNetwork is used by the WindowsNodes listed in the message",
    "Reconfiguring": "a WindowsNetwork change is being rolled out to one node at a time",
    "Registered": "the Node object exists",
    "Resumed": "spec.paused was set back to false; reconciling again",
    "RolledBack": "an upgrade failed and the previous kubelet/kube-proxy were put back (the node is Ready)",
    "RollingOut": "a WindowsNetwork spec change is being applied to its nodes",
    "Running": "kubelet and kube-proxy services are running",
    "SecretFound": "the credentials Secret was read",
    "SubnetsFree": "node subnets are left in the cluster CIDR",
    "Unused": "no WindowsNode names this WindowsNetwork (it may be deleted)",
    "UpToDate": "every node runs the current WindowsNetwork generation",
    "Upgraded": "the upgrade finished; the node runs the new version",
    "Upgrading": "kubelet and kube-proxy are being swapped for the new version",
    "Valid": "the WindowsNetwork spec does not overlap any other",
    "WithinSkewPolicy": "the wanted version fits the version skew policy",
    "PausedBySpec": "spec.paused is true: the operator does not touch the host",
    "Deleting": "the WindowsNode is being deleted; configuring stopped",
    "OwnedByThisNode": "the host carries this WindowsNode's ownership marker",
    "NodeRemoved": "the Node was deleted as part of deleting the WindowsNode",
    "Supported": "the host's Windows release is supported",
    "Passed": "the host meets every prerequisite (PrerequisitesMet)",
    # Event reasons (`kubectl describe wn NAME`, `kubectl get events`) that report progress.
    "CSRApproved": "Event: a kubelet CSR of this node passed every check and was approved",
    "NetworkApplied": "Event: a WindowsNetwork generation was applied to this node",
    "Removed": "Event: the node left the cluster and the host was cleaned; the WindowsNode goes next",
    "Paused": "Event: spec.paused became true; winnode stops touching the host",
    "HostCleaned": "Event: what deletion removed from the host",
    "CredentialsVerified": "Event: a changed credentials Secret was tried and works",
    "DriftRepaired": "Event: the drift check put back what changed on the host (listed)",
    "HostLeftToOwner": "Event: deleting this WindowsNode removed nothing from the host, which another WindowsNode owns",
    "Cordoned": "Event: the Node was cordoned for an upgrade or reboot",
    "Uncordoned": "Event: the Node takes pods again after an upgrade or reboot",
    "UpgradeRetryRequested": "Event: winnode.io/retry-upgrade asks to try a failed version again",
    "UpgradeStarted": "Event: an upgrade began (staging the new binaries)",
    "BinariesSwapped": "Event: the new kubelet and kube-proxy replaced the old ones",
    "UpgradeStep": "Event: an upgrade or reboot moved to its next step",
    "RebootRequested": "Event: winnode.io/reboot asks for a reboot (cordon, drain, reboot)",
    "Rebooting": "Event: the host is rebooting",
    "Rebooted": "Event: the host came back; the Node is Ready and uncordoned",
    "SlotAcquired": "Event: an upgrade or reboot got a slot of the maxUnavailable budget",
    "WaitingForSlot": "Event: an upgrade or reboot waits for a free slot (WINNODE_MAX_UNAVAILABLE); nothing is disrupted meanwhile",
}

_PROBLEMS: dict[str, tuple[str, str]] = {
    # Credentials (the Secret a WindowsNode names).
    "SecretNotFound": (
        "the credentials Secret named by spec.winrm.credentialsSecretRef does not exist",
        "create it (type kubernetes.io/basic-auth with username and password, or kubernetes.io/tls for "
        "certificate auth) in the namespace the WindowsNode names",
    ),
    "SecretForbidden": (
        "the operator may not read that Secret",
        "keep the Secret in the operator's namespace, or bind winnode:credentials-reader in its namespace "
        "(README: credentials in another namespace); check `kubectl auth can-i get secret NAME -n NS "
        "--as system:serviceaccount:winnode-system:winnode`",
    ),
    "ClusterDNSGuessed": (
        "neither the WindowsNetwork's dns.servers nor a kube-dns Service in kube-system gave the cluster "
        "DNS address, so kubelets got the 10th address of serviceCIDR",
        "set spec.dns.servers on the WindowsNetwork to your cluster DNS Service's IP "
        "(`kubectl -n kube-system get svc -o wide`), or name that Service kube-dns",
    ),
    "CertificatePinned": (
        "trustOnFirstUse: the WinRM listener's certificate seen on first contact is now pinned "
        "(status.listenerCertificateSHA256)",
        "nothing to do; compare the SHA-256 in the Event with the host's certificate "
        "(Get-ChildItem Cert:\\LocalMachine\\My on the host) if you want to be sure who answered",
    ),
    "CertificatePinMismatch": (
        "the WinRM listener presented a certificate other than the pinned one; nothing was sent to it",
        "if the host's certificate was replaced on purpose, set spec.winrm.certificateSHA256 to the new "
        "SHA-256 (with trustOnFirstUse: remove status.listenerCertificateSHA256); otherwise find out who "
        "answers at that address",
    ),
    "SecretNamespaceNotAllowed": (
        "the credentials Secret is in a namespace winnode does not read Secrets from",
        "move it to the operator's namespace, or opt the namespace in: a RoleBinding there to "
        "winnode:credentials-reader and the namespace in WINNODE_CREDENTIALS_NAMESPACES",
    ),
    "SpecUnreadable": (
        "the cluster stored a WindowsNode spec that winnode's model refuses (an older schema); the message "
        "names the fields",
        "correct the fields named (`kubectl edit wn NAME`); until then winnode leaves the host alone, and a "
        "deletion cleans the host only if address, winrm, nodeName and network are readable",
    ),
    "SecretKeyMissing": ("the Secret lacks a key the auth method needs", "add the key the message names"),
    "SecretValueInvalid": ("a value in the Secret is unusable (not UTF-8, not PEM, empty)", "fix the value"),
    "SecretUnreadable": ("reading the Secret failed (API error)", "check the apiserver and the operator log"),
    "AuthUnsupported": (
        "spec.winrm.auth names a method winnode does not support",
        "use ntlm, kerberos, credssp, basic or certificate",
    ),
    "CredentialsMissing": (
        "the connection has no credentials for its auth method",
        "fill the Secret's username/password or tls.crt/tls.key",
    ),
    # Reaching and logging in to the host.
    "HostUnreachable": (
        "no connection to the host's WinRM listener",
        "check the address and port, the firewall, and that WinRM listens (`winrm enumerate winrm/config/listener`)",
    ),
    "ConnectionRefused": (
        "the host refused the TCP connection",
        "start WinRM (`Enable-PSRemoting`) or open the port in the firewall",
    ),
    "ConnectionLost": (
        "the connection dropped after the script was sent; it may have run",
        "nothing: the step is idempotent and retried; if it repeats, check the network path and the host's event log",
    ),
    "HostTimeout": (
        "the host did not answer or finish in time",
        "check the host's load and the network; long downloads need a closer artifacts mirror",
    ),
    "NotReached": (
        "authentication was not tried because the host was not reached",
        "fix the Reachable condition first",
    ),
    "AuthenticationFailed": (
        "the host refused the credentials",
        "fix the username/password (or certificate mapping) in the Secret; the operator retries when the Secret changes",
    ),
    "AuthMethodUnavailable": (
        "the host does not offer the auth method spec.winrm.auth asks for",
        'enable it on the listener (`winrm set winrm/config/service/auth @{Basic="true"}` ...) or pick another',
    ),
    # Kerberos (spec.winrm.auth kerberos): what the KDC or the host said, from the krb5 error.
    "KerberosPasswordRejected": (
        "the KDC refused the password of the Secret's principal (pre-authentication failed)",
        "fix the password in the Secret; the operator retries when the Secret changes",
    ),
    "KerberosPrincipalUnknown": (
        "the KDC does not know the Secret's username as a principal",
        "set username to user@REALM (the realm in upper case, as krb5.conf names it)",
    ),
    "KerberosPasswordExpired": (
        "the principal's password has expired at the KDC",
        "set a new password for the account and put it in the Secret",
    ),
    "KerberosServicePrincipalUnknown": (
        "the KDC has no service principal HTTP/<host name> for the host",
        "register it (`setspn -S HTTP/<name> <computer>`) or set spec.winrm.kerberosHostname to the name it has",
    ),
    "KerberosKDCUnreachable": (
        "no KDC of the realm answered, or krb5.conf names none",
        "check the operator's krb5.conf (ConfigMap mounted at KRB5_CONFIG) and that the KDC's port 88 is "
        "reachable from the operator's pod",
    ),
    "KerberosTicketExpired": (
        "a Kerberos ticket was refused as expired: by the host, whose clock is past the ticket's end time",
        "synchronise the clocks of the operator's node, the KDC and the host (NTP; `w32tm /resync` on the host)",
    ),
    "KerberosClockSkew": (
        "the host's clock differs from the KDC's and the operator's by more than the allowed skew (5 minutes)",
        "synchronise the host's clock with the domain (`w32tm /resync` on the host; NTP on the operator's node)",
    ),
    "KerberosMutualAuthFailed": (
        "the host did not prove it holds the key of its service principal",
        "check that the address reaches the right machine and that its keytab/computer account is current",
    ),
    "KerberosPrincipalRejected": (
        "the host accepted the ticket but refused the principal (not in its Administrators group)",
        "add the domain account to the host's Administrators group, or use one that is",
    ),
    "KerberosFailed": (
        "a Kerberos step failed in a way winnode does not name; the message has krb5's text",
        "read the message and the KDC's log",
    ),
    "TLSVerificationFailed": (
        "the host's HTTPS certificate could not be verified",
        "set spec.winrm.caBundle to the CA that signed the listener's certificate (insecureSkipVerify only for tests)",
    ),
    "UnexpectedHTTPStatus": (
        "the WinRM endpoint answered an HTTP status WS-Management does not use",
        "check that spec.winrm.port is WinRM and no proxy sits in between",
    ),
    "WSManFault": (
        "WinRM answered with a WS-Management fault",
        "the message carries the host's fault text; check the WinRM service on the host",
    ),
    "WinRMQuotaExceeded": (
        "the host's WinRM quotas (shells or memory per user) are exhausted",
        "raise MaxShellsPerUser / MaxMemoryPerShellMB in winrm/config/winrs or close stale shells",
    ),
    "ShellLost": (
        "the remote shell vanished mid-command (WinRM restarted or the host rebooted)",
        "nothing: retried; check the host's uptime if it repeats",
    ),
    "EnvelopeTooLarge": (
        "a message exceeded the host's MaxEnvelopeSizekb",
        'raise it on the host (`winrm set winrm/config @{MaxEnvelopeSizekb="500"}`) or lower WINNODE_WINRM_MAX_ENVELOPE_SIZE_KB',
    ),
    "OutputTooLarge": (
        "a script printed more output than winnode accepts",
        "a bug or a foreign profile script printing on every session: check the host's PowerShell profile",
    ),
    "ProtocolError": (
        "the host's answer did not follow WS-Management or the script result contract",
        "check that the port is WinRM and that nothing on the host rewrites script output",
    ),
    "Cancelled": (
        "a host action was cancelled before it finished (operator stopping)",
        "nothing: the next operator run repeats the step",
    ),
    "HostError": ("a host failure without a finer class", "read the message and the operator log"),
    "ScriptFailed": ("a script ran on the host and failed", "the message carries the host's own error"),
    # Preflight (PrerequisitesMet).
    "UnsupportedOSBuild": (
        "the host runs a Windows build Kubernetes does not support",
        "reinstall with Windows Server 2022 or 2025 (2019 still works, deprecated)",
    ),
    "ContainersFeatureMissing": (
        "the Containers feature is not installed",
        "run `Install-WindowsFeature Containers` and reboot",
    ),
    "ContainerdMissing": ("no containerd service on the host", "install containerd as a Windows service"),
    "ContainerdNotRunning": (
        "containerd is installed but not running",
        "`Start-Service containerd`; set it to start automatically",
    ),
    "ContainerdConfigUnreadable": (
        "`containerd config dump` failed or printed no valid TOML",
        "run it on the host, fix config.toml, restart containerd",
    ),
    "ContainerdCRIDisabled": (
        "containerd's CRI plugin is disabled, so kubelet cannot run pods",
        "remove it from disabled_plugins in config.toml; restart containerd",
    ),
    "ContainerdCNIDirsMissing": (
        "containerd's CRI section names no CNI conf_dir or bin_dir(s)",
        "set conf_dir and bin_dirs in config.toml; restart containerd",
    ),
    "ContainerdRuntimeUnsupported": (
        "containerd's default runtime is not runhcs (io.containerd.runhcs.v1)",
        "restore the runhcs-wcow-process default runtime; restart containerd",
    ),
    "InsufficientDisk": (
        "too little free disk space for binaries and images",
        "free space on the system drive",
    ),
    "RebootPending": (
        "Windows waits for a reboot (updates or features)",
        "reboot the host; the operator continues afterwards",
    ),
    "ClockSkew": (
        "the host's clock is far from the operator's",
        "fix time sync (`w32tm /resync`); certificates fail otherwise",
    ),
    "ClockUnreadable": (
        "the host reported a time that cannot be parsed",
        "check the host's regional settings and time service",
    ),
    "MultipleProblems": ("several preflight checks failed", "the message lists each with its fix"),
    # Versions.
    "VersionSkew": (
        "spec.kubernetesVersion breaks the skew policy (newer than the apiserver or more than three minors older)",
        "pick a version between the apiserver's and three minors older",
    ),
    "VersionUnknown": ("spec.kubernetesVersion is not a version", "use vMAJOR.MINOR.PATCH"),
    "ApiserverVersionUnavailable": (
        "the apiserver's version could not be read",
        "check the operator's connection to the apiserver",
    ),
    # Binaries and files.
    "ChecksumMismatch": (
        "a downloaded binary does not match its SHA-256",
        "fix the mirror (spec.artifacts.baseURL) or spec.artifacts.sha256; a tampered file is never installed",
    ),
    "ChecksumUnavailable": (
        "the file's .sha256 could not be fetched",
        "publish <file>.sha256 next to the file or set spec.artifacts.sha256",
    ),
    "DiskFull": ("the host ran out of disk while writing", "free space on the host"),
    "ServiceRefusedToStart": (
        "kubelet or kube-proxy exited at once: it refused a flag or its config (the message names it)",
        "remove or fix that flag in spec.kubelet.extraArgs; the log is C:\\var\\log\\kubelet\\kubelet.log "
        "(kube-proxy: C:\\var\\log\\kube-proxy\\kube-proxy.log)",
    ),
    "ForeignServiceExists": (
        "a kubelet or kube-proxy service exists that winnode did not install",
        "remove it (`Stop-Service NAME; sc.exe delete NAME`)",
    ),
    # Joining.
    "ClusterDNSUnknown": (
        "the Service kube-system/kube-dns could not be read to set the kubelet's clusterDNS",
        "check the operator's RBAC (get services), or set spec.dns.servers in the WindowsNetwork",
    ),
    "KubeProxyIdentityFailed": (
        "kube-proxy's ServiceAccount or its token could not be made in namespace winnode-kube-proxy",
        "apply manifests/kubelet-bootstrap-rbac.yaml (the namespace) and check the operator's Role there",
    ),
    "BootstrapTokenFailed": (
        "the bootstrap token Secret could not be created in kube-system",
        "check the operator's RBAC on Secrets in kube-system",
    ),
    "BootstrapTokenRevokeFailed": (
        "the bootstrap token could not be deleted after the join",
        "nothing urgent: it expires by itself; check RBAC if it repeats",
    ),
    "NodeNotRegistered": (
        "the kubelet did not register its Node in time",
        "check the kubelet log on the host (C:\\var\\log\\kubelet), that the host reaches the apiserver (WINNODE_APISERVER_URL) and pending CSRs (`kubectl get csr`)",
    ),
    "NodeNotReady": (
        "the Node exists but is not Ready",
        "`kubectl describe node NAME`; usually CNI/HNS or containerd on the host",
    ),
    "NodeVanished": (
        "the Node disappeared while being configured",
        "nothing: retried; check who deletes Nodes if it repeats",
    ),
    "NodeMissing": (
        "the kubelet runs but its Node object is gone",
        "it re-registers within a minute; otherwise restart kubelet on the host",
    ),
    "NodeUpdateFailed": (
        "labels, taints or podCIDR could not be written to the Node",
        "check the operator's RBAC on Nodes",
    ),
    "NodeRemovalFailed": (
        "the Node could not be deleted during deconfigure",
        "check the operator's RBAC on Nodes; delete it by hand if needed",
    ),
    "OwnedByOtherWindowsNode": (
        "the host is marked as owned by another WindowsNode (the message names it); nothing on the host is changed",
        "delete this WindowsNode if it was created by mistake (the host and its node are left alone), or "
        "delete the other one first to hand the host over",
    ),
    "ApiserverURLUnknown": (
        "no apiserver URL for kubelets is known: no kube-public/cluster-info ConfigMap, WINNODE_APISERVER_URL "
        "is empty and the operator runs in the cluster; nothing was changed on the host",
        "set WINNODE_APISERVER_URL in the winnode Deployment to an https URL the hosts reach "
        "(`kubectl -n winnode-system set env deploy/winnode WINNODE_APISERVER_URL=https://api.example.com:6443`)",
    ),
    "OSDeprecated": (
        "the host runs Windows Server 2019, past support for the Kubernetes versions winnode installs; it is "
        "configured anyway",
        "plan to reinstall the host with Windows Server 2022 or 2025",
    ),
    "CSRNotApproved": (
        "Event: a CSR naming this node failed a check and is left pending (the message says which)",
        "if the node's addresses changed, the CSR is expected to fail; otherwise check who made it "
        "(`kubectl get csr -o wide`) and deny it (`kubectl certificate deny NAME`)",
    ),
    "DrainSkipped": (
        "Event: deletion was forced with pods still on the node",
        "check the workloads that were on the node",
    ),
    "HostNotCleaned": (
        "Event: deletion was forced while the host was not usable; the message lists what may be left on it",
        "remove the listed services, HNS network, firewall rules and directories on the host by hand",
    ),
    "HostTakenOver": (
        "Event: the host was marked by a WindowsNode that no longer exists; this one owns it now",
        "nothing, unless that WindowsNode was deleted by mistake",
    ),
    "RollingBack": (
        "Event: an upgrade failed after the swap; the previous binaries are being put back",
        "read UpgradeFailed once it finished; the version is not tried again until spec or retry annotation",
    ),
    "UpgradeFailed": (
        "Event: an upgrade failed and was rolled back (condition UpgradeFailed says why)",
        "fix the cause, then set annotation winnode.io/retry-upgrade or another spec.kubernetesVersion",
    ),
    "UpgradeRefused": (
        "Event: spec.kubernetesVersion breaks the skew policy; the node keeps its version (UpgradeBlocked)",
        "pick a version between the apiserver's and three minors older",
    ),
    "OwnerUnknown": (
        "the WindowsNodes could not be listed to check who owns the host",
        "check the apiserver and the operator's RBAC on windowsnodes",
    ),
    "StoppedAfterFailure": (
        "kubelet was stopped because a configure step failed after it started",
        "fix the failure named in lastError; kubelet starts again on the next try",
    ),
    # Network.
    "NetworkNotFound": (
        "the WindowsNetwork named by spec.network does not exist",
        "create it or fix spec.network",
    ),
    "VxlanPortUnsupported": (
        "the WindowsNetwork's spec.vxlan.port is not 4789 and this host's HNS has no VxlanPort policy "
        "(it needs HNS 10.3 or later: not Windows Server 2019)",
        "set spec.vxlan.port to 4789 (and flannel's VXLAN port with it), or run Server 2022 or later",
    ),
    "NetworkUnavailable": (
        "the WindowsNetwork could not be read or updated",
        "check the apiserver and the operator's RBAC on windowsnetworks",
    ),
    "AllocationConflict": ("two writers raced for a node subnet", "nothing: retried at once"),
    "ClusterCIDRExhausted": (
        "no free node subnet left in clusterCIDR",
        "widen clusterCIDR or use a longer nodeSubnetPrefixLength; delete unused WindowsNodes",
    ),
    "OverlapsOtherNetwork": (
        "the WindowsNetwork's CIDRs overlap another WindowsNetwork",
        "pick non-overlapping clusterCIDR/serviceCIDR",
    ),
    "Invalid": (
        "the WindowsNetwork spec is not usable (see its Valid condition)",
        "fix the spec as the Valid condition says",
    ),
    "NodesFailed": ("some nodes failed to apply the WindowsNetwork", "look at those WindowsNodes' status"),
    "Blocked": (
        "rolling out a WindowsNetwork change stopped at a node that failed",
        "fix that WindowsNode (named in the message); the rollout continues",
    ),
    "Failed": ("applying the WindowsNetwork failed", "read the message and the WindowsNodes it names"),
    "DeletionBlocked": (
        "deletion waits: WindowsNodes still use this network, or the host cannot be cleaned",
        "delete or move those WindowsNodes first; for an unreachable host see winnode.io/force-delete",
    ),
    # Draining, upgrades, reboots.
    "CordonFailed": ("the Node could not be cordoned", "check the operator's RBAC on Nodes"),
    "DrainFailed": ("evicting pods failed with an API error", "check the operator's RBAC on pods/eviction"),
    "DrainBlocked": (
        "evictions are refused (PodDisruptionBudget) past the drain timeout",
        "relax the PDB or annotate the WindowsNode winnode.io/force-delete=true to delete anyway",
    ),
    "DrainForced": (
        "deletion went ahead without a full drain (force-delete annotation or timeout)",
        "check the workloads that were on the node",
    ),
    "EvictionRefused": (
        "a PodDisruptionBudget refuses an eviction right now",
        "nothing, it is retried; relax the PDB if it stays",
    ),
    "DrainAborted": (
        "an upgrade's drain gave up; the node was uncordoned and the upgrade retries later",
        "relax or delete the PodDisruptionBudget that blocks it",
    ),
    "WaitingForSlot": (
        "re-creating the node's pod network waits for a free slot of the disruption budget",
        "nothing: it goes on once another node's upgrade or network change ends",
    ),
    "SlotUnavailable": (
        "the upgrade slots Lease could not be read or updated",
        "check the operator namespace exists and the operator may update Leases there",
    ),
    "RollbackFailed": (
        "an upgrade failed and putting the old binaries back failed too",
        "check the host; set spec.kubernetesVersion to a version that works",
    ),
    "RollbackImpossible": (
        "the previous binaries on the host are not the version to roll back to",
        "set spec.kubernetesVersion to a version that works, or restore the binaries by hand",
    ),
    "RebootTimeout": ("the host did not come back from a reboot in time", "check the host on its console"),
    # Anything else.
    "InternalError": ("an unexpected error (a bug)", "the operator log has the traceback; it is retried"),
}


def _action_reason(action: str) -> str:
    return "".join(part.capitalize() for part in action.split("_")) + "Failed"


def script_failure_reasons() -> dict[str, Reason]:
    """`<Action>Failed` for every host action (lifecycle.status names a failed script by its action)."""
    from winnode.host.actions import ACTIONS

    return {
        _action_reason(action): Reason(
            _action_reason(action),
            f"the {action} script failed on the host",
            "the message carries the host's own error; fix that on the host (or its inputs in the spec)",
        )
        for action in ACTIONS
    }


def all_reasons() -> dict[str, Reason]:
    """Reason name -> entry, sorted by name."""
    out: dict[str, Reason] = {name: Reason(name, meaning, OK) for name, meaning in _HEALTHY.items()}
    out.update({name: Reason(name, meaning, action) for name, (meaning, action) in _PROBLEMS.items()})
    out.update(script_failure_reasons())
    return dict(sorted(out.items()))


def markdown_table() -> str:
    rows = ["| reason | what it means | what to do |", "| --- | --- | --- |"]
    for r in all_reasons().values():
        rows.append(f"| `{r.name}` | {_cell(r.meaning)} | {_cell(r.action) or 'nothing: all is well'} |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
