"""The Kubernetes objects that carry the material, as JSON, and the JSON Patches that update them (pure).

* the serving Secret (type ``kubernetes.io/tls``): ``tls.crt``, ``tls.key`` and ``ca.crt`` (the bundle) —
  mounted by the webhook pods;
* the CA Secret (type ``Opaque``): ``ca.crt`` (the signing CA) and ``ca.key`` — read only by the certs
  Job/CronJob, never mounted by the webhook;
* the MutatingWebhookConfiguration: ``webhooks[*].clientConfig.caBundle`` = base64 of the bundle.

Updates are RFC 6902 patches that touch only the keys that change (other data keys, labels, annotations
and every other webhook field stay as they are). Each caBundle write is guarded by a ``test`` of the
webhook's name at that index, so a concurrent reordering fails the patch instead of writing elsewhere.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from cryptography import x509

from certs.inspection import fingerprint
from confidential_pods.wire import PatchOperation, pointer

TLS_SECRET_TYPE = "kubernetes.io/tls"
CA_SECRET_TYPE = "Opaque"
MANAGED_BY = {"app.kubernetes.io/managed-by": "confidential-pods-certs"}


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    resourceVersion: str


class Secret(TypedDict, total=False):
    apiVersion: Literal["v1"]
    kind: Literal["Secret"]
    metadata: ObjectMeta
    type: str
    data: dict[str, str]


class WebhookClientConfig(TypedDict, total=False):
    caBundle: str
    service: dict[str, Any]
    url: str


class MutatingWebhook(TypedDict, total=False):
    name: str
    clientConfig: WebhookClientConfig


class MutatingWebhookConfiguration(TypedDict, total=False):
    apiVersion: Literal["admissionregistration.k8s.io/v1"]
    kind: Literal["MutatingWebhookConfiguration"]
    metadata: ObjectMeta
    webhooks: list[MutatingWebhook]


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(value: str | None) -> bytes:
    """Base64 of a Secret value or caBundle; garbage decodes to ``b""`` (treated as absent)."""
    if not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def secret_files(secret: Secret | None) -> dict[str, bytes]:
    """The decoded data of a Secret (empty for a missing Secret)."""
    if secret is None:
        return {}
    return {key: decode(value) for key, value in (secret.get("data") or {}).items()}


def new_secret(name: str, namespace: str, secret_type: str, files: Mapping[str, bytes]) -> Secret:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "type": secret_type,
        "data": {key: encode(value) for key, value in sorted(files.items())},
    }


def secret_patch(secret: Secret, files: Mapping[str, bytes]) -> list[PatchOperation]:
    """Operations that set ``files`` in the Secret's data; empty when every value is already there."""
    data = secret.get("data")
    operations: list[PatchOperation] = []
    if data is None:
        operations.append({"op": "add", "path": "/data", "value": {}})
        data = {}
    for key, value in sorted(files.items()):
        if decode(data.get(key)) != value:
            operations.append({"op": "add", "path": pointer(["data", key]), "value": encode(value)})
    return operations


def ca_bundle_patch(configuration: MutatingWebhookConfiguration, bundle: bytes) -> list[PatchOperation]:
    """Operations that set ``caBundle`` of every webhook entry; empty when all already carry ``bundle``."""
    wanted = encode(bundle)
    operations: list[PatchOperation] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        client_config = webhook.get("clientConfig")
        if client_config is not None and decode(client_config.get("caBundle")) == bundle:
            continue
        operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")})
        if client_config is None:
            operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig", "value": {}})
        operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted})
    return operations


def webhook_bundles(configuration: MutatingWebhookConfiguration) -> list[tuple[x509.Certificate, ...]]:
    """The CAs of each webhook entry's caBundle (empty for a missing or unreadable one)."""
    bundles: list[tuple[x509.Certificate, ...]] = []
    for webhook in configuration.get("webhooks") or []:
        data = decode((webhook.get("clientConfig") or {}).get("caBundle"))
        try:
            bundles.append(tuple(x509.load_pem_x509_certificates(data)) if data else ())
        except ValueError:
            bundles.append(())
    return bundles


def published_fingerprints(configuration: MutatingWebhookConfiguration) -> frozenset[str] | None:
    """Fingerprints of the CAs that *every* webhook entry's caBundle trusts; None when there is no entry."""
    bundles = webhook_bundles(configuration)
    if not bundles:
        return None
    return frozenset.intersection(*(frozenset(fingerprint(ca) for ca in bundle) for bundle in bundles))
