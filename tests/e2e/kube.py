"""A small JSON client for the e2e apiserver, and builders/helpers for the objects the tests need.

Kubernetes JSON stays JSON (dicts in, dicts out): no typed client models, so nothing the models do not know
is dropped. TLS with the harness's CA and a client certificate, through the standard library only.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

#: Patch content types the apiserver accepts.
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """The apiserver answered with an error status; ``body`` is its Status object (or raw text)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", "") if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        """The Status message (what kubectl would print)."""
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else str(self.body)


class Kube:
    """JSON over HTTPS to one apiserver, authenticated by a client certificate (or a bearer token)."""

    def __init__(
        self,
        server: str,
        *,
        ca: Path,
        cert: Path | None = None,
        key: Path | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            self._context.load_cert_chain(str(cert), str(key) if key is not None else None)
        self._token = token

    def request_raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body bytes) for 2xx, raise :class:`ApiError` otherwise."""
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiError(method, path, exc.code, parsed) from None

    def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        _, raw = self.request_raw(method, path, **kwargs)
        result: JSON = json.loads(raw) if raw else {}
        return result

    def get_text(self, path: str) -> str:
        return self.request_raw("GET", path)[1].decode()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return self.request("GET", path, params=params)

    def create(self, path: str, body: Mapping[str, Any]) -> JSON:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, *, grace_period_seconds: int | None = None) -> JSON:
        body = None
        if grace_period_seconds is not None:
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": grace_period_seconds,
            }
        return self.request("DELETE", path, body=body)


def ensure_service_account(kube: Kube, namespace: str, name: str = "default") -> JSON:
    """Create a ServiceAccount unless it exists (there is no controller to create ``default``)."""
    try:
        return kube.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
    except ApiError as exc:
        if exc.status != 409:
            raise
        return kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")


def create_namespace(kube: Kube, name: str, labels: Mapping[str, str] | None = None) -> JSON:
    """Create a namespace and its ``default`` ServiceAccount (what the ServiceAccount admission needs).

    Namespaces never finish terminating without kube-controller-manager: use a fresh name per test.
    """
    metadata: JSON = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    namespace = kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    )
    ensure_service_account(kube, name)
    return namespace


def node_manifest(
    name: str,
    allocatable: Mapping[str, str],
    *,
    labels: Mapping[str, str] | None = None,
) -> JSON:
    """A Node as a kubelet would register it: Ready, with ``allocatable`` = ``capacity``.

    ``allocatable`` holds the extended resources to advertise (e.g.
    ``{"alibabacloud.com/sgx_epc_MiB": "96"}``); cpu, memory and pods get roomy defaults unless given
    (``pods`` must be > 0 for anything to schedule).
    """
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110", **allocatable}
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "e2e node (no kubelet)",
                }
            ],
        },
    }


def create_node(
    kube: Kube,
    name: str,
    allocatable: Mapping[str, str],
    *,
    labels: Mapping[str, str] | None = None,
) -> JSON:
    """Create a Ready Node advertising ``allocatable``; returns the stored Node.

    The status goes in with the create; if the apiserver dropped it, it is written through the ``status``
    subresource (a plain update of a Node ignores status).
    """
    manifest = node_manifest(name, allocatable, labels=labels)
    node = kube.create("/api/v1/nodes", manifest)
    if node.get("status", {}).get("allocatable") != manifest["status"]["allocatable"]:
        node = patch_node_status(kube, name, manifest["status"])
    return node


def patch_node_status(kube: Kube, name: str, status: Mapping[str, Any]) -> JSON:
    """Change a Node's status (e.g. allocatable) as a kubelet does: through ``nodes/{name}/status``."""
    return kube.patch(f"/api/v1/nodes/{name}/status", {"status": dict(status)})


def delete_pod(kube: Kube, namespace: str, name: str) -> None:
    """Delete a pod at once (grace period 0: without a kubelet a bound pod would never terminate)."""
    try:
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", grace_period_seconds=0)
    except ApiError as exc:
        if exc.status != 404:
            raise


def delete_pods(kube: Kube, namespace: str) -> None:
    """Delete every pod of ``namespace`` at once (grace period 0) and check none is left."""
    kube.delete(f"/api/v1/namespaces/{namespace}/pods", grace_period_seconds=0)  # the whole collection
    left = [p["metadata"]["name"] for p in kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"]]
    if left:
        raise AssertionError(f"pods of {namespace} still stored after their deletion: {left}")


def pod_events(kube: Kube, namespace: str, pod: str, reason: str) -> list[JSON]:
    """The events of ``reason`` (e.g. ``FailedScheduling``) about pod ``namespace/pod``."""
    events = kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        params={"fieldSelector": f"involvedObject.name={pod},reason={reason}"},
    )
    items: list[JSON] = events.get("items", [])
    return items
