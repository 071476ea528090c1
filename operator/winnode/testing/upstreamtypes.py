"""Would the code that reads it on a Windows host decode what winnode sends there?

hack/upstreamtypes (hack/build-upstreamtypes.sh) decodes, strictly, with the upstream Go types at the
versions winnode pins: CNI configurations as win-bridge / win-overlay and host-local load them
(containernetworking/plugins), HNS requests as hcsshim's internal/hns (v1) or hcn (v2) types, checked
against hcsshim's own feature version ranges for the host's HNS version, and flannel Node annotations
as flannel's kube subnet manager and vxlan backend read them. This module runs it and caches every
verdict by the content hash of its input (in memory and beside the binary, whose path names the
versions and the checker's source hash).

There is no fallback: when the checker cannot be built or run, UpstreamTypesUnavailable is raised and
the emulated HNS refuses the request (it cannot tell what the real one would do).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from winnode.testing.cluster import repo_root

BUILD_TIMEOUT_S = 1800.0
RUN_TIMEOUT_S = 300.0


class Kind(StrEnum):
    CNI_CONFIG = "cni-config"
    HNS_V1_NETWORK = "hns-v1-network"
    HNS_V1_ENDPOINT = "hns-v1-endpoint"
    HNS_V1_ATTACH = "hns-v1-attach"
    HNS_V2_NETWORK = "hns-v2-network"
    HNS_V2_MODIFY = "hns-v2-modify"
    FLANNEL_NODE = "flannel-node"


class UpstreamTypesUnavailable(RuntimeError):
    """hack/upstreamtypes could not be built or run: no verdict."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    kind: str
    error: str = ""


@dataclass(frozen=True)
class Case:
    kind: Kind
    doc: str
    # The host's HNS version (major, minor), for HNS requests: checked against hcsshim's feature ranges.
    hns_version: tuple[int, int] | None = None

    def key(self) -> str:
        body = json.dumps([str(self.kind), self.doc, self.hns_version])
        return hashlib.sha256(body.encode()).hexdigest()

    def to_json(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "kind": str(self.kind), "doc": self.doc}
        if self.hns_version is not None:
            out["hnsVersion"] = {"Major": self.hns_version[0], "Minor": self.hns_version[1]}
        return out


def flannel_case(annotations: Mapping[str, str], prefix: str) -> Case:
    """The flannel annotations of one Node, as flannel's kube subnet manager reads them."""
    doc = {"prefix": prefix, "annotations": dict(annotations)}
    return Case(Kind.FLANNEL_NODE, json.dumps(doc, sort_keys=True))


@cache
def binary() -> Path:
    """Build (or find, when cached) the checker; its path."""
    root = repo_root()
    if root is None:
        raise UpstreamTypesUnavailable(
            "hack/upstreamtypes needs a winnode checkout (hack/build-upstreamtypes.sh)"
        )
    try:
        done = subprocess.run(
            ["bash", str(root / "hack" / "build-upstreamtypes.sh")],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpstreamTypesUnavailable(f"hack/build-upstreamtypes.sh: {exc}") from None
    if done.returncode != 0:
        raise UpstreamTypesUnavailable(f"hack/build-upstreamtypes.sh failed: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


_memory: dict[str, Verdict] = {}
_lock = threading.Lock()


def _disk(key: str) -> Path:
    return binary().parent / "verdicts" / key[:2] / f"{key}.json"


def _load(key: str) -> Verdict | None:
    if (hit := _memory.get(key)) is not None:
        return hit
    try:
        raw = json.loads(_disk(key).read_text())
    except (OSError, ValueError):
        return None
    verdict = Verdict(bool(raw["ok"]), str(raw["kind"]), str(raw.get("error", "")))
    _memory[key] = verdict
    return verdict


def _store(key: str, verdict: Verdict) -> None:
    _memory[key] = verdict
    path = _disk(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(verdict.__dict__))
    tmp.replace(path)


def check_many(cases: Sequence[Case]) -> list[Verdict]:
    """The upstream decoders' verdict on each case, in order; unknown cases go to the checker in one run."""
    with _lock:
        keys = [c.key() for c in cases]
        found = {k: v for k in set(keys) if (v := _load(k)) is not None}
        todo = {k: c for k, c in zip(keys, cases, strict=True) if k not in found}
        if todo:
            doc = [c.to_json(k) for k, c in todo.items()]
            try:
                done = subprocess.run(
                    [str(binary())],
                    input=json.dumps(doc),
                    capture_output=True,
                    text=True,
                    timeout=RUN_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise UpstreamTypesUnavailable(f"upstreamtypes checker: {exc}") from None
            if done.returncode != 0:
                raise UpstreamTypesUnavailable(
                    f"upstreamtypes checker failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
                )
            for item in json.loads(done.stdout):
                if item.get("crash"):
                    raise UpstreamTypesUnavailable(f"upstreamtypes checker: {item.get('error')}")
                verdict = Verdict(bool(item["ok"]), str(item["kind"]), str(item.get("error", "")))
                _store(str(item["name"]), verdict)
                found[str(item["name"])] = verdict
        return [found[k] for k in keys]


def check(case: Case) -> Verdict:
    return check_many([case])[0]
