from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winnode.lifecycle.versions import Version, VersionError, default_version, skew_problem


def test_parse_and_order() -> None:
    assert Version.parse("v1.37.2") == Version(1, 37, 2)
    assert Version.parse("1.37.2+k3s1") == Version(1, 37, 2)
    assert Version.parse("v1.36.9") < Version.parse("v1.37.0")
    assert str(default_version("v1.37.2-rc.1")) == "v1.37.2"


@pytest.mark.parametrize("bad", ["", "1.37", "v1.x.2", "latest"])
def test_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(VersionError, match="not a Kubernetes version"):
        Version.parse(bad)


@pytest.mark.parametrize(
    ("kubelet", "apiserver", "ok"),
    [
        ("v1.37.2", "v1.37.2", True),
        ("v1.37.5", "v1.37.2", True),  # a newer patch of the same minor is within policy
        ("v1.34.0", "v1.37.2", True),
        ("v1.33.9", "v1.37.2", False),
        ("v1.38.0", "v1.37.2", False),
        ("v2.37.0", "v1.37.2", False),
    ],
)
def test_skew_table(kubelet: str, apiserver: str, ok: bool) -> None:
    problem = skew_problem(Version.parse(kubelet), Version.parse(apiserver))
    assert (problem is None) == ok, problem
    if problem:
        assert "spec.kubernetesVersion" in problem or "major" in problem


@given(st.integers(0, 60), st.integers(0, 60))
def test_skew_is_exactly_the_policy(kubelet_minor: int, api_minor: int) -> None:
    problem = skew_problem(Version(1, kubelet_minor, 0), Version(1, api_minor, 0))
    assert (problem is None) == (0 <= api_minor - kubelet_minor <= 3)
