"""``epcLimits: nri`` on the real kube-apiserver, for every overlay (the ``installation`` fixture).

The overlay's webhook is restarted on its port with ``epcLimits: nri`` added to the overlay's configuration
(the registration stays as installed), then with the overlay's own configuration again. What is checked is
what the apiserver stores: the sgx-epc NRI plugin's ``epc-limit.nri.io/container.<name>`` for every container
with EPC, in bytes (containers/nri-plugins cmd/plugins/sgx-epc/sgx-epc.go: ``strconv.ParseUint``, written to
``misc.max``), computed here by hand from the stored resources, not with our code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.product import Installation, Webhook, wait_webhook_registered
from tests.e2e.test_webhook import CONFIDENTIAL, EPC_ANNOTATION, app_pod

pytestmark = pytest.mark.e2e

LIMIT = "epc-limit.nri.io/container."
POD_LIMIT = "epc-limit.nri.io/pod"
MIB = 2**20
#: Server-set fields a client does not send when it creates a pod again from a stored one.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


@pytest.fixture
def limiting(installation: Installation, kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Webhook]:
    """The installation's webhook with ``epcLimits: nri``; the overlay's own configuration again after."""
    webhook = installation.webhook
    original = webhook.config
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**installation.settings, "epcLimits": "nri"}, sort_keys=False))
    webhook.stop()
    webhook.config = config
    try:
        webhook.start()
        wait_webhook_registered(kube, namespace)
        yield webhook
    finally:
        webhook.stop()
        webhook.config = original
        webhook.start()
        wait_webhook_registered(kube, namespace)


def limits(pod: JSON) -> dict[str, str]:
    annotations: dict[str, str] = pod["metadata"].get("annotations", {})
    return {k: v for k, v in annotations.items() if k.startswith("epc-limit.nri.io")}


def epc_bytes(pod: JSON, resource: str) -> dict[str, int]:
    """Each container's EPC limit in bytes, read by hand: ``<n>Mi`` (intel) or whole MiB (alibaba, azure)."""
    found = {}
    for each in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
        value = each.get("resources", {}).get("limits", {}).get(resource)
        if value is not None:
            found[each["name"]] = int(value.removesuffix("Mi")) * MIB
    return found


def again(stored: JSON, name: str) -> JSON:
    """The stored pod as a client would create it once more (the second admission of a mutated pod)."""
    metadata = {k: v for k, v in stored["metadata"].items() if k not in SERVER_FIELDS}
    spec = {k: v for k, v in stored["spec"].items() if k != "priority"}  # the Priority plugin sets it
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**metadata, "name": name}, "spec": spec}


def test_admitted_pods_carry_each_containers_limit_and_a_second_admission_changes_nothing(
    installation: Installation, pods: Callable[..., JSON], limiting: Webhook
) -> None:
    resource = installation.profile.epc_resource
    # The author's own "0" would mean no limit to the plugin: the webhook's value replaces it.
    own = {CONFIDENTIAL: "true", EPC_ANNOTATION: "128Mi", LIMIT + "app": "0", POD_LIMIT: "0"}
    stored = pods(app_pod("limited", own))
    epc = epc_bytes(stored, resource)
    assert epc["app"] == 128 * MIB
    assert "aesmd" in epc or installation.settings["runtimeClass"] == "none"  # a sandbox: the sidecar too
    assert limits(stored) == {**{LIMIT + name: str(n) for name, n in epc.items()}, POD_LIMIT: "0"}

    unchanged = limiting.reviews(endpoint="/mutate", outcome="unchanged")
    second = pods(again(stored, "limited-again"))
    assert second["metadata"]["annotations"] == stored["metadata"]["annotations"]
    assert limiting.reviews(endpoint="/mutate", outcome="unchanged") == unchanged + 1


def test_the_longest_container_name_the_key_allows_is_the_apiservers(
    kube: Kube, namespace: str, pods: Callable[..., JSON], limiting: Webhook
) -> None:
    """53 characters fit ``container.<name>`` in the 63 of an annotation key's name; the apiserver refuses 54,
    so the webhook refuses such a pod itself, with a message that names the container."""
    longest = app_pod("longest", {CONFIDENTIAL: "true"})
    longest["spec"]["containers"][0]["name"] = "c" * 53
    assert LIMIT + "c" * 53 in limits(pods(longest))

    plain = app_pod("plain", {LIMIT + "c" * 54: "1"})
    with pytest.raises(ApiError) as invalid:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", plain)
    assert invalid.value.status == 422 and "name part must be no more than 63" in invalid.value.message

    too_long = app_pod("too-long", {CONFIDENTIAL: "true"})
    too_long["spec"]["containers"][0]["name"] = "c" * 54
    with pytest.raises(ApiError) as refused:
        pods(too_long)
    assert refused.value.status == 403 and "54 characters long" in refused.value.message


def test_without_epc_limits_nothing_is_written(installation: Installation, pods: Callable[..., JSON]) -> None:
    assert installation.settings.get("epcLimits", "none") == "none"
    stored = pods(app_pod("unlimited", {CONFIDENTIAL: "true", LIMIT + "app": "7"}))
    assert limits(stored) == {LIMIT + "app": "7"}
