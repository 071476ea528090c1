"""The Python policy (what the webhook runs) and the CEL ValidatingAdmissionPolicy agree on every pod shape
the CEL can see: same verdict and, on a denial, the same message, word for word.

Each example is a server-side dry-run create through the real apiserver with only the policy installed
(no webhook), of a random pod shape wrapped in a random kind, compared with policy.judge on the same object.
nodeName is left out: only the webhook knows which nodes run Windows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from winnode.admission import policy
from winnode.testing.admission import AdmissionEnv, SyncApi, denial_message, wait_for, workload_object
from winnode.testing.cluster import ControlPlane

# Each example is one HTTP round trip of a few ms: this keeps the test well under a minute.
MAX_EXAMPLES = 400
KINDS = sorted(policy.POD_SPEC_PATHS)


@pytest.fixture(scope="module")
def policy_only(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdmissionEnv]:
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    e = AdmissionEnv(api, uuid.uuid4().hex[:6], tmp_path_factory.mktemp("admission-agreement"))
    try:
        e.setup_namespaces()
        e.setup_policy()
        probe = wrap(
            "Pod",
            {
                "os": {"name": "windows"},
                "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}],
            },
            e.namespace,
        )
        wait_for(lambda: e.dry_run_create(probe)[0] == 403, "policy in force")
        yield e
    finally:
        e.teardown()
        api.close()


def test_policy_type_checks_clean(policy_only: AdmissionEnv) -> None:
    """The apiserver type-checks every CEL expression against each matched kind's schema."""

    def checked() -> dict[str, Any] | None:
        vap = policy_only.api.ok(
            "GET",
            f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{policy_only.policy_name}",
        )
        status = vap.get("status") or {}
        return status if status.get("observedGeneration") == vap["metadata"]["generation"] else None

    status = wait_for(checked, "policy type-checked")
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


def wrap(kind: str, spec: dict[str, Any], namespace: str, name: str = "shape") -> dict[str, Any]:
    return workload_object(kind, name, namespace, spec)


# --- pod shapes -----------------------------------------------------------------------------------

OS_VALUES = ["windows", "linux", "darwin"]
os_expressions = st.one_of(
    st.builds(
        lambda op, values: {"key": "kubernetes.io/os", "operator": op, "values": values},
        st.sampled_from(["In", "NotIn"]),
        st.lists(st.sampled_from(OS_VALUES), min_size=1, max_size=3, unique=True),
    ),
    st.sampled_from(
        [
            {"key": "kubernetes.io/os", "operator": "Exists"},
            {"key": "kubernetes.io/os", "operator": "DoesNotExist"},
        ]
    ),
    st.just({"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}),
)
terms = st.builds(
    lambda exprs, fields: {
        **({"matchExpressions": exprs} if exprs else {}),
        **({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]} if fields else {}),
    },
    st.lists(os_expressions, max_size=3),
    st.booleans(),
)


@st.composite
def pod_specs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(
            st.sampled_from(["app", "log", "proxy", "metrics", "init", "mesh"]),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    n_apps = draw(st.integers(1, len(names)))
    spec: dict[str, Any] = {"containers": [{"name": n, "image": "img"} for n in names[:n_apps]]}
    inits = [
        {"name": n, "image": "img", **({"restartPolicy": "Always"} if draw(st.booleans()) else {})}
        for n in names[n_apps:]
    ]
    if inits:
        spec["initContainers"] = inits
    os_name = draw(st.sampled_from([None, "windows", "linux"]))
    if os_name:
        spec["os"] = {"name": os_name}
    selector = draw(st.sampled_from([None, "windows", "linux"]))
    if selector:
        spec["nodeSelector"] = {
            "kubernetes.io/os": selector,
            **({"zone": "a"} if draw(st.booleans()) else {}),
        }
    if draw(st.booleans()):
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": draw(st.lists(terms, min_size=1, max_size=3))
                }
            }
        }
    # HostProcess pods (Windows only, host network, every container HostProcess).
    if os_name != "linux" and draw(st.integers(0, 5)) == 0:
        spec["hostNetwork"] = True
        spec["securityContext"] = {"windowsOptions": {"hostProcess": True}}
    return spec


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=pod_specs(), kind=st.sampled_from(KINDS))
def test_cel_policy_agrees_with_python_policy(
    policy_only: AdmissionEnv, spec: dict[str, Any], kind: str
) -> None:
    obj = wrap(kind, spec, policy_only.namespace)
    expected = policy.judge(kind, obj)
    event(f"{'admitted' if expected.allowed else 'denied'}: {expected.reason}")
    status, doc = policy_only.dry_run_create(obj)
    assert status in (201, 403), f"{kind} {spec}: {status} {doc.get('message')}"
    if expected.allowed:
        assert status == 201, (
            f"CEL denied what Python admits ({expected.reason}): {doc.get('message')}\n{spec}"
        )
    else:
        assert status == 403, f"CEL admitted what Python denies: {expected.message}\n{spec}"
        assert denial_message(doc) == expected.message
