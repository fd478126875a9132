"""components/route-epc-pods on the real kube-apiserver and kube-scheduler, for every overlay.

The overlay with the component added is built with kustomize; its third entry (``route.confidential-pods.io``,
with the component's CEL conditions, so the real apiserver compiles them) is registered in a configuration of
its own, pointing at a second webhook process started with ``routeEPCPods: true``. Configurations are called
in name order, so ``confidential-pods-route`` runs after the injecting entries of ``confidential-pods``,
as the third entry does in one configuration.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.processes import wait_until
from tests.e2e.product import Installation, Webhook, delete_quietly
from tests.e2e.test_scheduling import CONFIDENTIAL, TIMEOUT, confidential_pod, namespace_pods, sgx_allocatable
from tests.manifests.building import build_with_components, find, find_kustomize

pytestmark = pytest.mark.e2e

ROUTE_CONFIGURATION = "confidential-pods-route"
CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@pytest.fixture
def router(installation: Installation, kube: Kube, tmp_path: Path) -> Iterator[Webhook]:
    """A second webhook with routeEPCPods on, registered for the component's third entry only."""
    kustomize = find_kustomize()
    assert kustomize is not None
    overlay = installation.overlay
    components = [*overlay.components, "route-epc-pods"]
    objects = build_with_components(kustomize, overlay.install, components, tmp_path / "k")
    entries = find(objects, "MutatingWebhookConfiguration", "confidential-pods")["webhooks"]
    (entry,) = [e for e in entries if e["name"] == "route.confidential-pods.io"]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**installation.settings, "routeEPCPods": True}))
    webhook = Webhook(cert_dir=installation.cert_dir, config=config, log_dir=installation.webhook.log_dir)
    webhook.start()
    ca = base64.b64encode((installation.cert_dir / "ca.crt").read_bytes()).decode()
    entry["clientConfig"] = {"url": webhook.url + "/route", "caBundle": ca}
    configuration = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                     "metadata": {"name": ROUTE_CONFIGURATION}, "webhooks": [entry]}  # fmt: skip
    kube.create(CONFIGURATIONS, configuration)  # the apiserver compiles and cost-checks the CEL here
    try:
        yield webhook
    finally:
        delete_quietly(kube, f"{CONFIGURATIONS}/{ROUTE_CONFIGURATION}")
        webhook.stop()


def epc_pod(name: str, resource: str, annotations: dict[str, str] | None = None, **spec: object) -> JSON:
    """A pod that requests EPC from the device plugin directly, as users of the plugin write them."""
    container = {"name": "app", "image": "registry.example.com/enclave-app:1",
                 "resources": {"limits": {resource: "16" if "MiB" in resource else "16Mi"}}}  # fmt: skip
    metadata: JSON = {"name": name, "annotations": annotations or {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [container], **spec},
    }


def create_routed(kube: Kube, namespace: str, manifest: JSON, router: Webhook) -> JSON:
    """Create the pod once the new configuration is in the apiserver's webhook cache (it reloads it
    asynchronously): retried until the router has answered a review."""
    before = router.reviews(endpoint="/route")
    created: JSON = {}

    def attempt() -> bool:
        nonlocal created
        name = f"{manifest['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        created = kube.create(f"/api/v1/namespaces/{namespace}/pods", {**manifest, "metadata": {
            **manifest["metadata"], "name": name}})  # fmt: skip
        return router.reviews(endpoint="/route") > before

    wait_until(attempt, timeout=TIMEOUT, what="the apiserver to call the route entry")
    return created


def test_epc_pod_without_opt_in_is_placed_by_the_confidential_scheduler(
    installation: Installation,
    kube: Kube,
    namespace: str,
    router: Webhook,
    make_node: Callable[..., JSON],
) -> None:
    profile = installation.profile
    node = make_node(sgx_allocatable(profile, 256))["metadata"]["name"]
    pod = create_routed(kube, namespace, epc_pod("plugin-user", profile.epc_resource), router)
    assert pod["spec"]["schedulerName"] == installation.settings["schedulerName"]
    assert "confidential-pods.io/status" not in pod["metadata"].get("annotations", {})  # nothing injected
    name = pod["metadata"]["name"]
    # No default-scheduler runs here: only the confidential scheduler can bind it (itself in native mode,
    # through the extender in ledger mode).
    wait_until(lambda: namespace_pods(kube, namespace)[name]["spec"].get("nodeName") == node,
               timeout=TIMEOUT, what="the routed pod to be bound")  # fmt: skip
    assert router.reviews(endpoint="/route", outcome="mutated") >= 1


def test_only_epc_pods_reach_the_entry_and_opted_in_pods_are_left_to_injection(
    installation: Installation, kube: Kube, make_namespace: Callable[..., str], router: Webhook
) -> None:
    profile = installation.profile
    namespace = make_namespace()
    create_routed(kube, namespace, epc_pod("warm-up", profile.epc_resource), router)
    reviews = router.reviews(endpoint="/route")
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
             "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}  # fmt: skip
    created = kube.create(f"/api/v1/namespaces/{namespace}/pods", plain)
    assert created["spec"]["schedulerName"] == "default-scheduler"
    injected = kube.create(f"/api/v1/namespaces/{namespace}/pods", confidential_pod("injected"))
    assert "confidential-pods.io/status" in injected["metadata"]["annotations"]
    assert router.reviews(endpoint="/route") == reviews  # neither was sent to /route

    # A pod opted out in an enabled namespace still holds EPC: it is routed, nothing injected.
    enabled = make_namespace({"confidential-pods.io/injection": "enabled"})
    opted_out = epc_pod("opted-out", profile.epc_resource, {CONFIDENTIAL: "false"})
    pod = kube.create(f"/api/v1/namespaces/{enabled}/pods", opted_out)
    assert pod["spec"]["schedulerName"] == installation.settings["schedulerName"]
    assert router.reviews(endpoint="/route") == reviews + 1


def test_failure_scope_is_the_epc_pods(
    installation: Installation, kube: Kube, namespace: str, router: Webhook
) -> None:
    """With no webhook answering the entry, a pod that requests EPC is refused and any other pod is not."""
    profile = installation.profile
    create_routed(kube, namespace, epc_pod("warm-up", profile.epc_resource), router)
    router.stop()
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain-while-down"},
             "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}  # fmt: skip
    kube.create(f"/api/v1/namespaces/{namespace}/pods", plain)
    with pytest.raises(ApiError) as refused:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", epc_pod("epc-while-down", profile.epc_resource))
    assert "route.confidential-pods.io" in str(refused.value)
    with contextlib.suppress(ApiError):
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/plain-while-down")


def test_a_misspelt_opt_in_is_refused_never_routed(
    installation: Installation, kube: Kube, make_namespace: Callable[..., str], router: Webhook
) -> None:
    """An EPC pod annotated "True" goes to the injecting entry, which refuses it; the route entry, whose
    not-opted-in condition is that entry's complement, never sees it (in an enabled namespace either)."""
    profile = installation.profile
    namespace = make_namespace()
    create_routed(kube, namespace, epc_pod("warm-up", profile.epc_resource), router)
    reviews = router.reviews(endpoint="/route")
    enabled = make_namespace({"confidential-pods.io/injection": "enabled"})
    entries = ((namespace, "pod.confidential-pods.io"), (enabled, "namespace.confidential-pods.io"))
    for target, entry in entries:
        with pytest.raises(ApiError) as refused:
            kube.create(f"/api/v1/namespaces/{target}/pods",
                        epc_pod("misspelt", profile.epc_resource, {CONFIDENTIAL: "True"}))  # fmt: skip
        assert f'admission webhook "{entry}" denied the request' in refused.value.message
        assert f"annotation {CONFIDENTIAL}='True' is not valid" in refused.value.message
    assert router.reviews(endpoint="/route") == reviews
