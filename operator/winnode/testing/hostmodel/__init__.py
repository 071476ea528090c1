"""A typed model of one Windows host, and the executors of every action in `winnode.host.actions`.

`model` holds the host itself (identity, power, facts, the dispatch of each action). Each seam
keeps its objects, its rules and its actions in a module of its own: `files` and `paths` (NTFS),
`scm` (services), `hns` (networks and host routes), `firewall`; beside them `fetch` (downloads),
`faults` (injected failures), `scripts` (the rendered script a request must match, and what
running one answers), `releases` and `errors`.
"""

from winnode.testing.hostmodel.errors import CRLF, GIB, NOT_ENOUGH_SPACE, REDACTED, ActionFailed
from winnode.testing.hostmodel.faults import Faults
from winnode.testing.hostmodel.fetch import Fetcher, FetchError, urllib_fetch
from winnode.testing.hostmodel.files import SECRET_FILE_ACL, FileEntry
from winnode.testing.hostmodel.firewall import FirewallRule
from winnode.testing.hostmodel.hns import HNS_VERSION_BY_BUILD, HnsNetwork, HnsRequestChecker
from winnode.testing.hostmodel.model import CONTAINERD_EXE, SYSTEM_DIRECTORIES, HostModel, new_host_model
from winnode.testing.hostmodel.paths import normalize_path, parent_path, path_key, split_command_line
from winnode.testing.hostmodel.releases import WINDOWS_RELEASES, WindowsRelease, release_for
from winnode.testing.hostmodel.scm import ServiceChecker, ServiceHook, ServiceRecord
from winnode.testing.hostmodel.scripts import ScriptOutcome, redact, script_for, stdin_for

__all__ = [
    "CONTAINERD_EXE",
    "CRLF",
    "GIB",
    "HNS_VERSION_BY_BUILD",
    "NOT_ENOUGH_SPACE",
    "REDACTED",
    "SECRET_FILE_ACL",
    "SYSTEM_DIRECTORIES",
    "WINDOWS_RELEASES",
    "ActionFailed",
    "Faults",
    "FetchError",
    "Fetcher",
    "FileEntry",
    "FirewallRule",
    "HnsNetwork",
    "HnsRequestChecker",
    "HostModel",
    "ScriptOutcome",
    "ServiceChecker",
    "ServiceHook",
    "ServiceRecord",
    "WindowsRelease",
    "new_host_model",
    "normalize_path",
    "parent_path",
    "path_key",
    "redact",
    "release_for",
    "script_for",
    "split_command_line",
    "stdin_for",
    "urllib_fetch",
]
