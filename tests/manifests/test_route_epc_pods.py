"""components/route-epc-pods: the third webhook entry, added to every install, and its CEL conditions."""

from __future__ import annotations

from typing import Any

import pytest

from confidential_pods.profiles import PROFILES
from tests.manifests.building import (
    INSTALLS,
    Manifest,
    build_with_components,
    documented_patches,
    find,
    helm_template,
    sent,
)

ENTRIES = ["namespace.confidential-pods.io", "pod.confidential-pods.io", "route.confidential-pods.io"]
#: An ``epcResource`` no profile uses, as docs/install.md's patch names it.
EPC_RESOURCE = "example.com/sgx_epc"
#: The JSON patch docs/install.md gives an overlay with ``epcResource`` set (found by its target path).
DOCUMENTED_PATCH = "/webhooks/2/matchConditions/0/expression"


@pytest.fixture(scope="module")
def routed(kustomize: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    work = tmp_path_factory.mktemp("route-epc-pods")
    return {
        name: build_with_components(kustomize, name, ["route-epc-pods"], work / name) for name in INSTALLS
    }


def _route_entry(objects: list[Manifest]) -> Manifest:
    configuration = find(objects, "MutatingWebhookConfiguration", "confidential-pods")
    entries = {entry["name"]: entry for entry in configuration["webhooks"]}
    assert list(entries) == ENTRIES  # after the injecting entries: it sees the pods they marked
    return entries["route.confidential-pods.io"]


@pytest.mark.parametrize("name", INSTALLS)
def test_third_entry_in_every_install(routed: dict[str, list[Manifest]], name: str) -> None:
    entry = _route_entry(routed[name])
    assert entry["clientConfig"]["service"]["path"] == "/route"
    assert entry["rules"] == [
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
         "scope": "Namespaced"}
    ]  # fmt: skip
    assert entry["failurePolicy"] == "Fail" and entry["reinvocationPolicy"] == "Never"
    expressions = {e["key"]: e for e in entry["namespaceSelector"]["matchExpressions"]}
    assert expressions["confidential-pods.io/injection"] == {
        "key": "confidential-pods.io/injection", "operator": "NotIn", "values": ["disabled"]
    }  # fmt: skip
    assert set(expressions["kubernetes.io/metadata.name"]["values"]) == {
        "kube-system", "kube-public", "kube-node-lease", "confidential-pods"
    }  # fmt: skip


def _pod(
    resources: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app", "resources": resources or {}}]}
    if init is not None:
        spec["initContainers"] = [{"name": "init", "image": "init", "resources": init}]
    metadata: dict[str, Any] = {"name": "p", "namespace": "shop"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _epc(resource: str, where: str = "limits") -> dict[str, Any]:
    return {where: {resource: "16"}}


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize(
    ("pod_of", "expected"),
    [
        (lambda r: _pod(_epc(r)), True),
        (lambda r: _pod(_epc(r, "requests")), True),
        (lambda r: _pod(init=_epc(r)), True),  # an init container or native sidecar alone
        (lambda r: _pod(_epc(r), {"confidential-pods.io/confidential": "false"}), True),  # opted out
        (lambda r: _pod(_epc(r), {"team": "payments"}), True),
        (lambda r: _pod(_epc(r), {"confidential-pods.io/confidential": "true"}), False),
        # Any other value goes to an injecting entry, which refuses it: never routed as if not opted in.
        (lambda r: _pod(_epc(r), {"confidential-pods.io/confidential": "True"}), False),
        (lambda r: _pod(_epc(r), {"confidential-pods.io/confidential": "yes"}), False),
        (lambda r: _pod(_epc(r), {"confidential-pods.io/confidential": ""}), False),
        (lambda r: _pod(_epc(r), {"confidential-pods.io/status": "{}"}), False),  # injected before
        (lambda r: _pod(), False),
        (lambda r: _pod({"limits": {"cpu": "1"}}), False),
        (lambda r: _pod(init={"requests": {"memory": "1Gi"}}), False),
    ],
)
def test_conditions_select_epc_pods_that_did_not_opt_in(
    routed: dict[str, list[Manifest]], profile: str, pod_of: Any, expected: bool
) -> None:
    entry = _route_entry(routed["base"])
    assert sent(entry, pod_of(PROFILES[profile].epc_resource)) is expected


def test_the_condition_names_every_profile_resource(routed: dict[str, list[Manifest]]) -> None:
    (requests_epc,) = [
        c for c in _route_entry(routed["base"])["matchConditions"] if c["name"] == "requests-epc"
    ]
    for profile in PROFILES.values():
        assert f"'{profile.epc_resource}'" in requests_epc["expression"]


def test_component_is_in_no_overlay_by_default(built: dict[str, list[Manifest]]) -> None:
    for name in INSTALLS:
        configuration = find(built[name], "MutatingWebhookConfiguration", "confidential-pods")
        assert [entry["name"] for entry in configuration["webhooks"]] == ENTRIES[:2]


# --- epcResource set to another name: the entry must select the pods that request it ---


@pytest.fixture(scope="module")
def configured_entries(
    helm: str, kustomize: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Manifest]:
    """The route entry with ``epcResource: example.com/sgx_epc``: from the chart (config.epcResource) and from
    kustomize (the component plus the patch docs/install.md gives, read from there)."""
    chart = helm_template(helm, "overlay=azure", "routeEPCPods=true", f"config.epcResource={EPC_RESOURCE}")
    work = tmp_path_factory.mktemp("route-epc-resource")
    patches = documented_patches(DOCUMENTED_PATCH)
    built = build_with_components(kustomize, "azure", ["route-epc-pods"], work, patches)
    return {"chart": _route_entry(chart), "kustomize": _route_entry(built)}


@pytest.mark.parametrize("source", ["chart", "kustomize"])
@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_pod(_epc(EPC_RESOURCE)), True),
        (_pod(_epc(EPC_RESOURCE, "requests")), True),
        (_pod(init=_epc(EPC_RESOURCE)), True),
        (_pod(_epc(EPC_RESOURCE), {"confidential-pods.io/confidential": "false"}), True),
        (_pod(_epc(EPC_RESOURCE), {"confidential-pods.io/confidential": "true"}), False),
        (_pod(_epc(EPC_RESOURCE), {"confidential-pods.io/status": "{}"}), False),
        *((_pod(_epc(profile.epc_resource)), True) for profile in PROFILES.values()),
        (_pod({"limits": {"example.com/other": "1"}}), False),
        (_pod(), False),
    ],
)
def test_the_entry_selects_pods_requesting_the_configured_resource(
    configured_entries: dict[str, Manifest], source: str, pod: dict[str, Any], expected: bool
) -> None:
    assert sent(configured_entries[source], pod) is expected


def test_without_the_patch_the_configured_resource_is_not_routed(routed: dict[str, list[Manifest]]) -> None:
    """Why the patch is needed: the component alone names the profiles' resources only."""
    assert not sent(_route_entry(routed["azure"]), _pod(_epc(EPC_RESOURCE)))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_profile_resource_as_epc_resource_leaves_the_entry_as_the_component_writes_it(
    helm: str, routed: dict[str, list[Manifest]], profile: str
) -> None:
    """epcResource set to a name the list has already (e.g. sgx.intel.com/epc on AKS): named once."""
    resource = PROFILES[profile].epc_resource
    chart = helm_template(helm, "overlay=azure", "routeEPCPods=true", f"config.epcResource={resource}")
    assert _route_entry(chart) == _route_entry(routed["azure"])
