"""``epcLimits: nri``: the sgx-epc NRI plugin's annotations, equal to each container's EPC in bytes.

The plugin (containers/nri-plugins cmd/plugins/sgx-epc/sgx-epc.go) reads ``epc-limit.nri.io/container.<name>``
first, then ``epc-limit.nri.io/pod``, then ``epc-limit.nri.io``, parses the value with
``strconv.ParseUint(v, 10, 64)`` and treats 0 as no limit. So a written value must be decimal digits, above
0, and the container key must hold the webhook's number whatever the author wrote.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confidential_pods.epc import container_request
from confidential_pods.profiles import PROFILES
from confidential_pods.settings import Settings, settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, container, pod
from webhook.epclimits import CONTAINER_KEY, LONGEST_NAME, POD_KEY
from webhook.offline import inject_documents
from webhook.policy import STATUS, mutate

SIDECAR_IMAGE = "registry.example/aesmd:2.25"
#: What Go's strconv.ParseUint(v, 10, 64) accepts, and the plugin's "limit > 0".
GO_UINT = re.compile(r"[0-9]+")


def config(profile: str = "alibaba", limits: str = "nri", **keys: Any) -> Settings:
    base = {"profile": profile, "epcLimits": limits, "aesm": "host", "runtimeClass": "none"}
    return settings_from_mapping({**base, **keys})


def limits_of(result: dict[str, Any]) -> dict[str, str]:
    annotations = result["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith("epc-limit.nri.io")}


def epc_by_container(result: dict[str, Any], settings_: Settings) -> dict[str, int]:
    spec = result["spec"]
    everyone = [*spec.get("initContainers", []), *spec["containers"]]
    return {c["name"]: n for c in everyone if (n := container_request(c, settings_.profile)) > 0}


def admitted(original: dict[str, Any], settings_: Settings) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Mutate, apply, validate; then the idempotence the webhook promises: the admitted pod admitted again
    is unchanged, and without the marker only the marker is written again."""
    before = copy.deepcopy(original)
    mutation = mutate(original, namespace_opted_in=False, settings=settings_)
    assert original == before
    assert mutation.outcome == "mutated", mutation.message
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    again = mutate(result, namespace_opted_in=False, settings=settings_)
    assert (again.outcome, again.patch) == ("unchanged", ()), again
    unmarked = copy.deepcopy(result)
    del unmarked["metadata"]["annotations"][STATUS]
    replay = mutate(unmarked, namespace_opted_in=False, settings=settings_)
    assert [op["path"] for op in replay.patch] == ["/metadata/annotations/confidential-pods.io~1status"]
    return result, mutation.warnings


def assert_limits_equal_epc(result: dict[str, Any], settings_: Settings) -> None:
    """Every container with EPC carries its own key, equal to its EPC in bytes, as the plugin parses it."""
    limits = limits_of(result)
    for name, epc in epc_by_container(result, settings_).items():
        value = limits[CONTAINER_KEY + name]
        assert GO_UINT.fullmatch(value) and 0 < int(value) < 2**64, value
        assert int(value) == epc, (name, value, epc)


@pytest.mark.parametrize("profile", ["alibaba", "azure", "intel"])
def test_each_container_with_epc_gets_its_limit_in_bytes(profile: str) -> None:
    settings_ = config(profile, runtimeClass="kata", aesmSidecarImage=SIDECAR_IMAGE)
    original = pod(
        annotations={
            **CONFIDENTIAL,
            "confidential-pods.io/containers": "app,worker",
            "confidential-pods.io/epc.worker": "16Mi",
        },
        containers=[container("app"), container("worker"), container("web")],
        init=[container("migrate")],
    )
    result, warnings = admitted(original, settings_)
    assert limits_of(result) == {
        "epc-limit.nri.io/container.app": str(64 * 2**20),
        "epc-limit.nri.io/container.worker": str(16 * 2**20),
        "epc-limit.nri.io/container.aesmd": str(8 * 2**20),  # the injected sidecar has EPC: limited too
    }
    assert_limits_equal_epc(result, settings_)
    assert warnings == ()


def test_a_regular_init_container_that_requests_epc_is_limited() -> None:
    settings_ = config()
    init = container("seal", resources={"limits": {"alibabacloud.com/sgx_epc_MiB": "4"}})
    result, _ = admitted(pod(annotations=CONFIDENTIAL, init=[init]), settings_)
    assert limits_of(result) == {
        "epc-limit.nri.io/container.app": str(64 * 2**20),
        "epc-limit.nri.io/container.seal": str(4 * 2**20),
    }


def test_none_writes_nothing_and_leaves_the_authors_annotations() -> None:
    own = {"epc-limit.nri.io/container.app": "0", POD_KEY: "5"}
    result, _ = admitted(pod(annotations={**CONFIDENTIAL, **own}), config(limits="none"))
    assert limits_of(result) == own
    assert limits_of(admitted(pod(annotations=CONFIDENTIAL), config(limits="none"))[0]) == {}


@pytest.mark.parametrize(
    "value",
    ["0", "1099511627776", "67108864 ", "64Mi", "", "-1", "0x4000000"],
    ids=["zero-is-unlimited", "larger", "trailing-space", "suffix", "empty", "negative", "hex"],
)
def test_an_authors_limit_never_stands_for_a_container_with_epc(value: str) -> None:
    """The webhook's value wins (a warning says so); refusing would also refuse a Deployment whose template
    kept the limit of an older defaultEPC. The pod-level keys reach only containers without EPC: kept."""
    key = "epc-limit.nri.io/container.app"
    original = pod(annotations={**CONFIDENTIAL, key: value, POD_KEY: "0", "epc-limit.nri.io": "0"})
    result, warnings = admitted(original, config())
    assert limits_of(result) == {key: "67108864", POD_KEY: "0", "epc-limit.nri.io": "0"}
    assert warnings == (f"annotation {key}={value!r} replaced by 67108864, the container's EPC in bytes "
                        "(epcLimits: nri)",)  # fmt: skip


def test_an_authors_equal_limit_is_kept_without_a_warning() -> None:
    original = pod(annotations={**CONFIDENTIAL, "epc-limit.nri.io/container.app": "67108864"})
    mutation = mutate(original, namespace_opted_in=False, settings=config())
    assert mutation.warnings == ()
    assert not [op for op in mutation.patch if "epc-limit" in op["path"]]


def test_a_forged_status_marker_does_not_skip_the_limits() -> None:
    """A pod whose author wrote the marker at creation is not mutated — but under nri its limits are still
    made equal to its EPC; a template injected before nri was configured gets them the same way."""
    forged = pod(
        annotations={**CONFIDENTIAL, STATUS: "{}", "epc-limit.nri.io/container.app": "0"},
        containers=[container("app", resources={"limits": {"alibabacloud.com/sgx_epc_MiB": "32"}})],
    )
    mutation = mutate(forged, namespace_opted_in=False, settings=config())
    assert mutation.outcome == "mutated"
    assert [dict(op) for op in mutation.patch] == [
        {"op": "add", "path": "/metadata/annotations/epc-limit.nri.io~1container.app", "value": "33554432"}
    ]
    assert mutation.warnings == (
        "annotation epc-limit.nri.io/container.app='0' replaced by 33554432, the container's EPC in bytes "
        "(epcLimits: nri)",
    )
    fixed = jsonpatch.apply_patch(forged, [dict(op) for op in mutation.patch])
    assert mutate(fixed, namespace_opted_in=False, settings=config()).outcome == "unchanged"
    # Under none the marker still means "not again".
    assert mutate(forged, namespace_opted_in=False, settings=config(limits="none")).outcome == "unchanged"


def test_a_container_name_too_long_for_the_key_is_refused() -> None:
    longest = "a" * LONGEST_NAME
    result, _ = admitted(pod(annotations=CONFIDENTIAL, containers=[container(longest)]), config())
    assert list(limits_of(result)) == [CONTAINER_KEY + longest]
    too_long = pod(annotations=CONFIDENTIAL, containers=[container(longest + "b")])
    mutation = mutate(too_long, namespace_opted_in=False, settings=config())
    assert mutation.outcome == "denied"
    assert "54 characters long" in mutation.message and "allows 53" in mutation.message
    # Without limits such a name is no problem.
    assert mutate(too_long, namespace_opted_in=False, settings=config(limits="none")).outcome == "mutated"


def test_inject_writes_them_and_a_second_inject_changes_nothing() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": dict(CONFIDENTIAL)},
                "spec": {"containers": [container("app")]},
            },
        },
    }
    (once,) = inject_documents([deployment], config(), namespace_opted_in=False).documents
    assert limits_of(once["spec"]["template"]) == {"epc-limit.nri.io/container.app": "67108864"}
    assert inject_documents([once], config(), namespace_opted_in=False).documents == [once]


# --- property: whatever the author writes, limits equal EPC, and a second admission changes nothing -----

NAMES = st.sampled_from(["app", "worker", "web", "aesmd-like", "x" * LONGEST_NAME])
AUTHOR_VALUES = st.sampled_from(["0", "1", "67108864", "99999999999999999999", "64Mi", "", " 1"]) | st.text(
    max_size=12
)


@st.composite
def pods(draw: st.DrawFn) -> tuple[dict[str, Any], Settings]:
    profile = draw(st.sampled_from(sorted(PROFILES)))
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    epc_resource = PROFILES[profile].epc_resource
    own_unit = "2" if PROFILES[profile].unit > 1 else "2Mi"
    own = {"limits": {epc_resource: own_unit}}
    containers = [container(n, resources=own) if draw(st.booleans()) else container(n) for n in names]
    annotations = dict(CONFIDENTIAL)
    enclaves = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    annotations["confidential-pods.io/containers"] = ",".join(enclaves)
    for name in draw(st.lists(st.sampled_from(enclaves), unique=True)):
        annotations[f"confidential-pods.io/epc.{name}"] = draw(st.sampled_from(["4Mi", "32Mi", "1Gi"]))
    for key in draw(st.lists(st.sampled_from([*(CONTAINER_KEY + n for n in names), POD_KEY]), unique=True)):
        annotations[key] = draw(AUTHOR_VALUES)
    keys: dict[str, Any] = {"profile": profile, "epcLimits": "nri", "maxEPCPerPod": "64Gi"}
    if draw(st.booleans()):
        keys.update(runtimeClass="kata", aesmSidecarImage=SIDECAR_IMAGE)
    else:
        keys.update(aesm="host", runtimeClass="none")
    return pod(annotations=annotations, containers=containers), settings_from_mapping(keys)


@settings(max_examples=150, deadline=None)
@given(case=pods())
def test_limits_equal_epc_and_a_second_admission_changes_nothing(
    case: tuple[dict[str, Any], Settings],
) -> None:
    original, settings_ = case
    result, _ = admitted(original, settings_)
    assert_limits_equal_epc(result, settings_)
    # The status annotation's containers all have EPC, so all have their limit.
    injected = json.loads(result["metadata"]["annotations"][STATUS])["containers"]
    assert {CONTAINER_KEY + name for name in injected} <= set(limits_of(result))
