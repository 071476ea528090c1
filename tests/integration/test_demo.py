"""`winnode demo --exit` (what `make demo` runs) as a user sees it: Ready nodes, a node's kubelet log
through `kubectl get --raw .../proxy/logs/?query=kubelet`, the webhook refusing an
overlapping WindowsNetwork and a second WindowsNode for a taken host, an upgrade from one release of the
mirror to the other, the metrics endpoint, and no tracebacks or ERROR lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from winnode.testing.nodenet import NodeNetwork


def test_demo_shows_refusals_an_upgrade_and_metrics(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "winnode", "demo", "--exit", "--workdir", str(tmp_path / "cp")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out
    assert " ERROR " not in out
    releases = re.search(r"serving kubelet and kube-proxy (v\S+) and (v\S+)", out)
    assert releases, out
    old, new = releases.groups()
    assert re.search(r"kubectl v\S+: /\S+/kubectl --kubeconfig /\S+", out), out
    assert re.search(r"operator metrics at http://127\.0\.0\.1:\d+/metrics", out)
    # The node log query through kube-apiserver, where node addresses in a namespace can be made.
    why = NodeNetwork.available()
    if why is None:
        assert 'get --raw "/api/v1/nodes/win-2019/proxy/logs/?query=kubelet"' in out, out
        assert re.search(r"I\d{4} [\d:.]+ +\d+ kubelet.go:1\] Successfully registered node", out), out
    else:
        assert f"(node log query not shown: {why})" in out, out
    assert 'admission webhook "windowsnetworks.winnode.io" denied the request' in out
    assert "overlaps spec.clusterCIDR 10.244.0.0/16 of WindowsNetwork pods" in out
    assert 'admission webhook "windowsnodes.winnode.io" denied the request' in out
    assert "is already the host of WindowsNode win-2022a" in out
    assert re.search(rf"win-2022a\s+Ready\s+\(kubelet {re.escape(new)}\)", out), out
    final = out.rsplit("kubernetesVersion", 1)[-1]
    assert re.search(rf"win-2022a\s+Ready\s+{re.escape(new)}", final), final
    assert re.search(rf"win-2022b\s+Ready\s+{re.escape(old)}", final), final
