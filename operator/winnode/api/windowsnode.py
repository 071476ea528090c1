"""WindowsNode: one Windows Server host that winnode turns into a Kubernetes node and looks after."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from winnode.api.common import (
    LIST_ATOMIC,
    MAX_QUALIFIED_NAME,
    QUALIFIED_NAME,
    ApiModel,
    Conditions,
    CustomResource,
    DNSSubdomain,
    HostAddress,
    LabelValue,
    MapKeys,
    MapValuesExclude,
    PrinterColumn,
    Quantity,
    ResourceInfo,
    Rule,
    SecretReference,
    Sha256Hex,
    StatusModel,
    Taint,
    TaintEffect,
    list_map,
    model_rules,
    parse_ip,
)
from winnode.api.labels import ReservedLabelKeys

KUBERNETES_VERSION = r"^v1\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"
# http(s) URL of a directory: no query or fragment, because file paths are appended to it. Printable
# ASCII only, spelled as explicit ranges: the apiserver's Go regexp reads \s as ASCII whitespace while
# Python and pydantic read it as Unicode, so a class like [^\s] let the cluster store a URL with
# U+00A0 that the operator then refused. Other characters are percent-encoded (RFC 3986).
BASE_URL = r'^https?://[!"$-.0->@-~]+(/[!"$->@-~]*)?$'
ARTIFACT_FILE = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
KUBELET_FLAG = r"^[a-z0-9][-a-z0-9]*$"
WINRM_HTTPS_PORT = 5986
WINRM_HTTP_PORT = 5985

# Flags winnode derives from its own configuration; letting extraArgs override them would break
# bootstrap, certificate rotation or the Windows service wiring, bypass a dedicated field, or emit a
# flag twice (the kubelet keeps the last). Every flag of lifecycle/kubelet_config.py's kubelet
# command line is here (a unit test holds them together): extend this one list when it grows.
MANAGED_KUBELET_FLAGS: tuple[str, ...] = (
    "alsologtostderr",
    "bootstrap-kubeconfig",
    "cert-dir",
    "cgroups-per-qos",
    "config",
    "config-dir",
    "container-runtime-endpoint",
    "enforce-node-allocatable",
    "hostname-override",
    "kubeconfig",
    "log-dir",
    "log-file",
    "logtostderr",
    "max-pods",
    "node-ip",
    "node-labels",
    "register-with-taints",
    "resolv-conf",
    "root-dir",
    "system-reserved",
    "windows-priorityclass",
    "windows-service",
)
# Flags that weaken who may call the kubelet's API or what it trusts: anonymous access, authorization
# other than Webhook, the unauthenticated read-only port, other serving or client CAs, no certificate
# rotation, weaker TLS, and static pods from paths or URLs that bypass admission.
# (Flag names: pkg/kubelet/apis/config and cmd/kubelet/app/options/options.go at hack/versions.env.)
WEAKENING_KUBELET_FLAGS: tuple[str, ...] = (
    "anonymous-auth",
    "authentication-token-webhook",
    "authentication-token-webhook-cache-ttl",
    "authorization-mode",
    "authorization-webhook-cache-authorized-ttl",
    "authorization-webhook-cache-unauthorized-ttl",
    "client-ca-file",
    "manifest-url",
    "manifest-url-header",
    "pod-manifest-path",
    "read-only-port",
    "rotate-certificates",
    "rotate-server-certificates",
    "tls-cert-file",
    "tls-cipher-suites",
    "tls-min-version",
    "tls-private-key-file",
)
SYSTEM_RESERVED_RESOURCES: tuple[str, ...] = ("cpu", "memory", "ephemeral-storage", "pid")


class NodePhase(StrEnum):
    PENDING = "Pending"
    CONNECTING = "Connecting"
    PREPARING = "Preparing"
    INSTALLING = "Installing"
    JOINING = "Joining"
    READY = "Ready"
    UPGRADING = "Upgrading"
    DRAINING = "Draining"
    DECONFIGURING = "Deconfiguring"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class WindowsNodeConditionType(StrEnum):
    """Condition types of a WindowsNode (status.conditions[].type)."""

    # The credentials Secret exists and holds the keys the chosen auth needs.
    CREDENTIALS_AVAILABLE = "CredentialsAvailable"
    REACHABLE = "Reachable"
    AUTHENTICATED = "Authenticated"
    PREREQUISITES_MET = "PrerequisitesMet"
    # The requested (or default) version fits the version skew policy against the apiserver.
    VERSION_COMPATIBLE = "VersionCompatible"
    BINARIES_INSTALLED = "BinariesInstalled"
    SERVICES_RUNNING = "ServicesRunning"
    NETWORK_CONFIGURED = "NetworkConfigured"
    NODE_REGISTERED = "NodeRegistered"
    NODE_READY = "NodeReady"
    UPGRADE_BLOCKED = "UpgradeBlocked"
    UPGRADE_FAILED = "UpgradeFailed"
    DRAIN_BLOCKED = "DrainBlocked"
    # spec.paused is true: winnode leaves the host alone (no configure, repair or upgrade).
    PAUSED = "Paused"
    # False when the cluster stored a spec winnode's model refuses; the message names the fields.
    SPEC_READABLE = "SpecReadable"
    # The host carries this WindowsNode's ownership marker (one host, one WindowsNode).
    HOST_OWNED = "HostOwned"
    # The host's Windows release is supported (False, OSDeprecated: configured, but past support).
    OS_SUPPORTED = "OSSupported"


class WinRMScheme(StrEnum):
    HTTPS = "https"
    HTTP = "http"


class WinRMAuth(StrEnum):
    NTLM = "ntlm"
    KERBEROS = "kerberos"
    # Named so the schema can refuse it with a reason (CREDSSP_REFUSED) rather than "unsupported value".
    CREDSSP = "credssp"
    BASIC = "basic"
    CERTIFICATE = "certificate"


CREDSSP_REFUSED = (
    "auth credssp is not supported: winnode has no CredSSP client, so it could never log on; use ntlm "
    "or kerberos (domain accounts), or basic or certificate over https"
)

# These protocols seal every WinRM message themselves, so they stay confidential over plain http.
MESSAGE_ENCRYPTING_AUTH: frozenset[WinRMAuth] = frozenset(
    {WinRMAuth.NTLM, WinRMAuth.KERBEROS, WinRMAuth.CREDSSP}
)


class WinRMConfig(ApiModel):
    """How winnode reaches the host's WinRM (WS-Management) listener."""

    model_config = ConfigDict(
        json_schema_extra=model_rules(
            Rule("self.auth != 'credssp'", CREDSSP_REFUSED, field_path=".auth"),
            Rule(
                "self.scheme == 'https' || self.auth in ['ntlm', 'kerberos', 'credssp']",
                "scheme http is only allowed with auth ntlm, kerberos or credssp, which encrypt each "
                "WinRM message themselves; use scheme https for basic and certificate auth",
                field_path=".scheme",
            ),
            Rule(
                "!(has(self.caBundle) && self.insecureSkipVerify)",
                "set either caBundle (trust this CA) or insecureSkipVerify (trust any certificate), not both",
                field_path=".caBundle",
            ),
            Rule(
                "self.scheme == 'https' || !has(self.caBundle)",
                "caBundle only applies to scheme https",
                field_path=".caBundle",
            ),
            Rule(
                "self.scheme == 'https' || !self.insecureSkipVerify",
                "insecureSkipVerify only applies to scheme https",
                field_path=".insecureSkipVerify",
            ),
            Rule(
                "self.scheme == 'https' || (!has(self.certificateSHA256) && !self.trustOnFirstUse)",
                "certificateSHA256 and trustOnFirstUse pin the certificate of an https listener: "
                "use scheme https",
                field_path=".certificateSHA256",
            ),
            Rule(
                "!(has(self.certificateSHA256) && self.trustOnFirstUse)",
                "set either certificateSHA256 (pin this certificate) or trustOnFirstUse (pin the first one "
                "seen), not both",
                field_path=".trustOnFirstUse",
            ),
            Rule(
                "!has(self.kerberosHostname) || self.auth == 'kerberos'",
                "kerberosHostname only applies to auth kerberos",
                field_path=".kerberosHostname",
            ),
            Rule(
                "!has(self.kerberosHostname) || !isIP(self.kerberosHostname)",
                "kerberosHostname must be the host's DNS name (its service principal is HTTP/<name>), "
                "not an IP address",
                field_path=".kerberosHostname",
            ),
            Rule(
                "!self.insecureSkipVerify || (!has(self.certificateSHA256) && !self.trustOnFirstUse)",
                "a pinned certificate is verified; insecureSkipVerify would accept any: set one of them",
                field_path=".insecureSkipVerify",
            ),
        )
    )

    scheme: WinRMScheme = Field(
        WinRMScheme.HTTPS,
        description="https (the listener on 5986) or http (5985; only with ntlm, kerberos or credssp).",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port of the listener. Defaults to 5986 for https and 5985 for http.",
    )
    auth: WinRMAuth = Field(
        WinRMAuth.NTLM,
        description=(
            "Authentication: ntlm (local or domain account), kerberos (domain account; address must "
            "be the host's DNS name, or set kerberosHostname), basic (local account, https only) or certificate (client "
            "certificate mapped to a local account, https only). credssp is refused: winnode has no "
            "CredSSP client."
        ),
    )
    credentials_secret_ref: SecretReference = Field(
        description=(
            "Secret with the credentials: keys username and password for ntlm, kerberos, credssp and "
            "basic (a kubernetes.io/basic-auth Secret), tls.crt and tls.key for certificate "
            "(a kubernetes.io/tls Secret). Domain accounts are written DOMAIN\\user or user@domain."
        ),
    )
    kerberos_hostname: HostAddress | None = Field(
        None,
        description=(
            "auth kerberos: the host's DNS name in its service principal HTTP/<name>, when address is "
            "another name or an IP address (a load balancer, a NAT). Tickets are requested for "
            "HTTP/<kerberosHostname>; the connection still goes to address."
        ),
    )
    ca_bundle: str | None = Field(
        None,
        max_length=65536,
        pattern="-----BEGIN CERTIFICATE-----",
        description=(
            "PEM-encoded CA certificates that sign the listener's certificate. "
            "Without it the operator's system trust store is used."
        ),
    )
    insecure_skip_verify: bool = Field(
        False,
        description=(
            "Accept any certificate from the listener. Anyone on the path can then read the "
            "credentials; meant for labs only."
        ),
    )
    certificate_sha256: Sha256Hex | None = Field(
        None,
        alias="certificateSHA256",
        description=(
            "Pin the listener's certificate: the SHA-256 of its DER encoding, hex "
            "((Get-Item Cert:\\LocalMachine\\My\\<thumbprint>).GetCertHashString('SHA256')). Only that "
            "certificate is accepted (a self-signed one too); on any other the connection is closed "
            "before credentials are sent."
        ),
    )
    trust_on_first_use: bool = Field(
        False,
        description=(
            "Pin the certificate the listener presents on first contact: its SHA-256 is recorded in "
            "status.listenerCertificateSHA256 and required from then on (remove that status field to "
            "accept a replaced certificate)."
        ),
    )

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return WINRM_HTTPS_PORT if self.scheme is WinRMScheme.HTTPS else WINRM_HTTP_PORT

    @model_validator(mode="after")
    def _consistent(self) -> WinRMConfig:
        if self.auth is WinRMAuth.CREDSSP:
            raise ValueError(CREDSSP_REFUSED)
        if self.kerberos_hostname is not None:
            if self.auth is not WinRMAuth.KERBEROS:
                raise ValueError("kerberosHostname only applies to auth kerberos")
            if parse_ip(self.kerberos_hostname) is not None:
                raise ValueError(
                    "kerberosHostname must be the host's DNS name (its service principal is "
                    "HTTP/<name>), not an IP address"
                )
        if self.scheme is WinRMScheme.HTTP:
            if self.auth not in MESSAGE_ENCRYPTING_AUTH:
                raise ValueError(
                    "scheme http is only allowed with auth ntlm, kerberos or credssp, which encrypt each "
                    "WinRM message themselves; use scheme https for basic and certificate auth"
                )
            if self.ca_bundle is not None:
                raise ValueError("caBundle only applies to scheme https")
            if self.insecure_skip_verify:
                raise ValueError("insecureSkipVerify only applies to scheme https")
        if self.ca_bundle is not None and self.insecure_skip_verify:
            raise ValueError(
                "set either caBundle (trust this CA) or insecureSkipVerify (trust any certificate), not both"
            )
        pinned = self.certificate_sha256 is not None or self.trust_on_first_use
        if pinned and self.scheme is WinRMScheme.HTTP:
            raise ValueError(
                "certificateSHA256 and trustOnFirstUse pin the certificate of an https listener: use scheme https"
            )
        if self.certificate_sha256 is not None and self.trust_on_first_use:
            raise ValueError(
                "set either certificateSHA256 (pin this certificate) or trustOnFirstUse (pin the first one "
                "seen), not both"
            )
        if pinned and self.insecure_skip_verify:
            raise ValueError(
                "a pinned certificate is verified; insecureSkipVerify would accept any: set one of them"
            )
        return self


class Artifacts(ApiModel):
    """Where the host downloads kubelet and kube-proxy from."""

    base_url: str = Field(
        alias="baseURL",
        max_length=2048,
        pattern=BASE_URL,
        description=(
            "http(s) URL of a mirror laid out like https://dl.k8s.io: files are fetched from "
            "<baseURL>/<kubernetesVersion>/bin/windows/amd64/<file>. The host downloads them itself, "
            "so the URL must be reachable from the host. Printable ASCII only, with no query or "
            "fragment: percent-encode anything else."
        ),
    )
    sha256: Annotated[
        dict[str, Sha256Hex],
        MapKeys(
            what="file names",
            pattern=ARTIFACT_FILE,
            max_length=128,
            hint="plain file names such as kubelet.exe",
        ),
        Field(max_length=16),
    ] = Field(
        default_factory=dict,
        description=(
            "Expected SHA-256 (hex) per file name, e.g. kubelet.exe: <64 hex digits>. Files not listed "
            "are checked against the <file>.sha256 published next to them."
        ),
    )


class KubeletConfig(ApiModel):
    """Settings of the kubelet on this host beyond those winnode manages."""

    extra_args: Annotated[
        dict[str, Annotated[str, StringConstraints(max_length=1024)]],
        MapKeys(
            what="extraArgs flags",
            pattern=KUBELET_FLAG,
            max_length=64,
            hint="flag names without leading dashes, such as v or feature-gates",
        ),
        MapKeys(what="extraArgs", forbidden=MANAGED_KUBELET_FLAGS),
        MapKeys(
            what="extraArgs",
            forbidden=WEAKENING_KUBELET_FLAGS,
            forbidden_why="they weaken the kubelet's authentication, authorization or TLS",
        ),
        MapValuesExclude(
            what="extraArgs values",
            character="%",
            why="the Service Control Manager expands %NAME% in a service's command line when it starts it",
        ),
        Field(max_length=64),
    ] = Field(
        default_factory=dict,
        description=(
            "Extra kubelet command-line flags, name (without leading dashes) to value, e.g. "
            "v: '2'. Flags winnode sets itself (kubeconfig, config, root-dir, log-file, ...) and flags "
            "that weaken authentication or authorization (anonymous-auth, authorization-mode, ...) are "
            "refused, and so are values containing %."
        ),
    )
    system_reserved: Annotated[
        dict[str, Quantity],
        MapKeys(what="systemReserved resources", allowed=SYSTEM_RESERVED_RESOURCES),
        Field(max_length=len(SYSTEM_RESERVED_RESOURCES)),
    ] = Field(
        default_factory=dict,
        description=(
            "Resources kept for Windows itself and not offered to pods, as quantities: "
            "cpu (e.g. 500m), memory (e.g. 2Gi), ephemeral-storage, pid."
        ),
    )
    max_pods: int = Field(110, ge=1, le=250, description="Most pods the kubelet runs at once.")


DEFAULT_TAINTS: tuple[Taint, ...] = (Taint(key="os", value="windows", effect=TaintEffect.NO_SCHEDULE),)


class WindowsNodeSpec(ApiModel):
    """Which host to turn into a node and how."""

    model_config = ConfigDict(
        json_schema_extra=model_rules(
            Rule(
                "self.winrm.auth != 'kerberos' || !isIP(self.address) || has(self.winrm.kerberosHostname)",
                "kerberos needs address to be the host's DNS name (Kerberos finds the host by its "
                "service principal name); use the DNS name, set winrm.kerberosHostname, or auth ntlm "
                "with an IP address",
                field_path=".address",
            ),
        )
    )

    address: HostAddress = Field(
        description="DNS name or IP address at which winnode reaches the host over WinRM.",
    )
    node_name: DNSSubdomain | None = Field(
        None,
        description=(
            "Name of the Kubernetes Node the host registers as. Defaults to metadata.name. "
            "Cannot change once set."
        ),
    )
    network: DNSSubdomain = Field(
        description="Name of the WindowsNetwork that wires this node's pods.",
    )
    winrm: WinRMConfig = Field(description="How to reach and authenticate to the host's WinRM listener.")
    kubernetes_version: (
        Annotated[str, StringConstraints(max_length=32, pattern=KUBERNETES_VERSION)] | None
    ) = Field(
        None,
        description=(
            "Version of kubelet and kube-proxy, e.g. v1.37.2. Defaults to the apiserver's version. "
            "May be at most three minor versions older than the apiserver and never newer. "
            "Changing it upgrades the node (cordon, drain, swap, uncordon)."
        ),
    )
    artifacts: Artifacts | None = Field(
        None,
        description="Download location of the binaries. Defaults to https://dl.k8s.io.",
    )
    labels: Annotated[
        dict[str, LabelValue],
        MapKeys(
            what="label keys",
            pattern=QUALIFIED_NAME,
            max_length=MAX_QUALIFIED_NAME,
            hint=(
                "qualified names: an optional DNS subdomain prefix and '/', then up to 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
        ),
        ReservedLabelKeys(),
        Field(max_length=64),
    ] = Field(
        default_factory=dict,
        description=(
            "Labels winnode keeps on the Node, in addition to kubernetes.io/os=windows and the like. Keys "
            "under kubernetes.io/ and k8s.io/ are refused except node-restriction.kubernetes.io/*, "
            "node.kubernetes.io/*, kubelet.kubernetes.io/*, topology.kubernetes.io/zone and /region and the "
            "instance-type keys."
        ),
    )
    taints: Annotated[list[Taint], list_map("key", "effect"), Field(max_length=32)] = Field(
        default=list(DEFAULT_TAINTS),
        description=(
            "Taints winnode keeps on the Node. The default, os=windows:NoSchedule, keeps Linux pods "
            "that do not tolerate it off the node; set [] for none."
        ),
    )
    kubelet: KubeletConfig = Field(
        default_factory=KubeletConfig,
        description="kubelet settings.",
        json_schema_extra={"default": {}},
    )
    paused: bool = Field(
        False,
        description=(
            "Stop touching the host: no configuration, repair or upgrade while true. "
            "Status is still reported."
        ),
    )

    @model_validator(mode="after")
    def _kerberos_needs_name(self) -> WindowsNodeSpec:
        if (
            self.winrm.auth is WinRMAuth.KERBEROS
            and parse_ip(self.address) is not None
            and self.winrm.kerberos_hostname is None
        ):
            raise ValueError(
                "kerberos needs address to be the host's DNS name (Kerberos finds the host by its "
                "service principal name); use the DNS name, set winrm.kerberosHostname, or auth ntlm "
                "with an IP address"
            )
        return self


class InstalledVersions(StatusModel):
    """Versions of the Kubernetes binaries installed on the host."""

    kubelet: str | None = Field(None, description="Version of kubelet.exe, e.g. v1.37.2.")
    kube_proxy: str | None = Field(None, description="Version of kube-proxy.exe.")
    cni_plugins: str | None = Field(
        None,
        description="Release of the CNI plugins (win-bridge, win-overlay, host-local) from "
        "containernetworking/plugins installed where containerd looks for them.",
    )


class HostFacts(StatusModel):
    """What winnode last read from the host."""

    hostname: str | None = Field(None, description="Computer name of the host.")
    os_build: int | None = Field(
        None, description="Windows build number: 17763 (2019), 20348 (2022), 26100 (2025)."
    )
    os_ubr: int | None = Field(None, alias="osUBR", description="Update build revision (patch level).")
    edition: str | None = Field(None, description="Windows edition, e.g. ServerDatacenter.")
    containerd_version: str | None = Field(None, description="Version of the containerd service.")
    addresses: Annotated[list[str], LIST_ATOMIC] = Field(
        default_factory=list, description="IP addresses of the host."
    )
    reboot_pending: bool | None = Field(None, description="Windows waits for a reboot to finish an update.")
    machine_guid: str | None = Field(
        None,
        description=(
            "The host's MachineGuid (HKLM\\SOFTWARE\\Microsoft\\Cryptography): its identity, whatever "
            "address or name it is reached by."
        ),
    )


class UpgradeStep(StrEnum):
    STAGING = "Staging"
    WAITING_FOR_SLOT = "WaitingForSlot"
    CORDONING = "Cordoning"
    DRAINING = "Draining"
    SWAPPING = "Swapping"
    STARTING = "Starting"
    VERIFYING = "Verifying"
    UNCORDONING = "Uncordoning"
    ROLLING_BACK = "RollingBack"
    REBOOTING = "Rebooting"


class UpgradeProgress(StatusModel):
    """An upgrade or reboot in progress (step set), or the last failed upgrade; absent otherwise."""

    operation: str | None = Field(
        None, description="Upgrade (new binaries) or Reboot (winnode.io/reboot-requested)."
    )
    from_version: str | None = Field(None, description="Version installed before the upgrade.")
    to_version: str | None = Field(None, description="Version being installed.")
    step: UpgradeStep | None = Field(
        None,
        description=(
            "Current step: Staging, WaitingForSlot, Cordoning, Draining, Swapping, Starting, "
            "Verifying, Uncordoning, RollingBack or Rebooting; absent once the upgrade ended."
        ),
    )
    started_at: datetime | None = Field(None, description="When the upgrade started.")
    failed_version: str | None = Field(
        None,
        description=(
            "A version whose upgrade failed and was rolled back; it is not tried again until "
            "spec.kubernetesVersion changes or the annotation winnode.io/retry-upgrade is set."
        ),
    )
    boot_id: str | None = Field(
        None, description="Boot id of the host before a reboot winnode asked for (a new one proves it)."
    )


class AppliedNetwork(StatusModel):
    """Which WindowsNetwork spec a host runs."""

    name: str = Field(description="The WindowsNetwork.")
    generation: int = Field(
        ge=0,
        description="Its metadata.generation when applied.",
        json_schema_extra={"format": "int64"},
    )
    spec: dict[str, Any] = Field(
        description="Its spec as applied.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )


class WindowsNodeStatus(StatusModel):
    """State of the host and its Node as winnode last saw it."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    phase: NodePhase | None = Field(
        None,
        description=(
            "Where the node is in its life: Pending, Connecting, Preparing (checking the host), "
            "Installing, Joining (waiting for the Node to register and turn Ready), Ready, Upgrading, "
            "Draining, Deconfiguring (being removed), Degraded (was Ready, now being repaired) or "
            "Failed (needs an admin; see conditions and lastError)."
        ),
    )
    conditions: Conditions = Field(
        default_factory=list,
        description="Current state in detail: " + ", ".join(WindowsNodeConditionType) + ".",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="metadata.generation of the spec this status describes.",
        json_schema_extra={"format": "int64"},
    )
    node_name: str | None = Field(None, description="Name of the Node the host registered as.")
    installed: InstalledVersions | None = Field(
        None, description="Installed versions of kubelet and kube-proxy."
    )
    host: HostFacts | None = Field(None, description="Facts read from the host.")
    subnet: str | None = Field(None, description="Pod CIDR allocated to this node from its WindowsNetwork.")
    applied_network: AppliedNetwork | None = Field(
        None,
        description=(
            "The WindowsNetwork spec last applied to this host and seen Ready with it. A network change "
            "rolls across its nodes one at a time; until its turn a node keeps (and repairs) this one."
        ),
    )
    upgrade: UpgradeProgress | None = Field(None, description="Progress of a running upgrade.")
    last_error: str | None = Field(None, description="The most recent error, with what to do about it.")
    listener_certificate_sha256: str | None = Field(
        None,
        alias="listenerCertificateSHA256",
        description=(
            "SHA-256 of the WinRM listener's certificate recorded on first contact "
            "(spec.winrm.trustOnFirstUse); only that certificate is accepted from then on."
        ),
    )
    left_on_host: Annotated[list[str], LIST_ATOMIC] = Field(
        default_factory=list,
        description=(
            "What a forced deletion could not remove from the unreachable host (services, files, "
            "HNS networks), for an admin to clean up."
        ),
    )


WINDOWS_NODE = ResourceInfo(
    kind="WindowsNode",
    plural="windowsnodes",
    singular="windowsnode",
    short_names=("wn",),
    spec=WindowsNodeSpec,
    status=WindowsNodeStatus,
    description=(
        "A Windows Server host that winnode turns into a Kubernetes node over WinRM: it checks the "
        "host, installs and configures kubelet and kube-proxy, joins the node, keeps it healthy, "
        "upgrades it and cleans it up on delete."
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", "Where the node is in its life."),
        PrinterColumn("Version", ".status.installed.kubelet", "Installed kubelet version."),
        PrinterColumn("Node", ".status.nodeName", "Name of the Kubernetes Node."),
        PrinterColumn("Address", ".spec.address", "Address of the host's WinRM listener."),
        PrinterColumn("Network", ".spec.network", "WindowsNetwork of the node.", priority=1),
        PrinterColumn(
            "OS Build", ".status.host.osBuild", "Windows build number.", type="integer", priority=1
        ),
        PrinterColumn("Upgrade", ".status.upgrade.step", "Step of a running upgrade or reboot.", priority=1),
        PrinterColumn("Target", ".status.upgrade.toVersion", "Version being upgraded to.", priority=1),
        PrinterColumn(
            "Failed", ".status.upgrade.failedVersion", "Version whose upgrade was rolled back.", priority=1
        ),
        PrinterColumn(
            "Paused",
            ".spec.paused",
            "spec.paused: winnode leaves the host alone.",
            type="boolean",
            priority=1,
        ),
        PrinterColumn(
            "Age",
            ".metadata.creationTimestamp",
            "Time since the WindowsNode was created.",
            type="date",
        ),
    ),
    selectable_fields=(".spec.network", ".spec.address"),
    validations=(
        Rule(
            "(has(self.spec.nodeName) ? self.spec.nodeName : self.metadata.name) == "
            "(has(oldSelf.spec.nodeName) ? oldSelf.spec.nodeName : oldSelf.metadata.name)",
            "nodeName cannot change once set (it defaults to metadata.name): the Node and its "
            "certificates are bound to it; delete the WindowsNode and create a new one to rename the node",
            field_path=".spec.nodeName",
        ),
    ),
)


class WindowsNode(CustomResource):
    """A whole WindowsNode object."""

    info: ClassVar[ResourceInfo] = WINDOWS_NODE

    kind: Literal["WindowsNode"] = "WindowsNode"
    spec: WindowsNodeSpec
    status: WindowsNodeStatus = Field(default_factory=WindowsNodeStatus)

    @property
    def node_name(self) -> str:
        """The Node name this host registers as."""
        return self.spec.node_name or self.metadata.name
