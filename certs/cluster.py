"""Talk to the apiserver: read and patch the Secrets and the MutatingWebhookConfiguration.

The official kubernetes client with raw JSON bodies (``_preload_content=False`` on every call, so no object
goes through the client's models). Errors become :class:`ObjectMissingError` (404) and
:class:`PermissionDeniedError` (403, naming the RBAC verb and resource the caller needs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from certs.errors import ClusterError, ObjectMissingError, PermissionDeniedError
from certs.objects import MutatingWebhookConfiguration, Secret, new_secret, secret_patch
from confidential_pods import kube
from confidential_pods.wire import PatchOperation

SECRETS = "secrets"
WEBHOOK_CONFIGURATIONS = "mutatingwebhookconfigurations.admissionregistration.k8s.io"
JSON_PATCH = "application/json-patch+json"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "confidential-pods"
#: Seconds for one API request (connect + read): a hung apiserver fails the run, the Job retries.
REQUEST_TIMEOUT = 30


def connect(kubeconfig: str | None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else the in-cluster ServiceAccount, else ``$KUBECONFIG``/~/.kube."""
    try:
        return kube.api_client(kubeconfig)
    except kube.CredentialsError as exc:
        raise ClusterError(str(exc)) from None


def default_namespace() -> str:
    """The Pod's own namespace when running in-cluster, else ``confidential-pods``."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


class Call(NamedTuple):
    """What a request does, in RBAC terms (for error messages)."""

    verb: str
    resource: str
    name: str
    namespace: str | None = None

    def target(self) -> str:
        kind = "Secret" if self.resource == SECRETS else "MutatingWebhookConfiguration"
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


class Cluster:
    """The few API calls the certs commands make."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._admission = client.AdmissionregistrationV1Api(api)
        self._host = api.configuration.host

    def _call(self, call: Call, request: Callable[[], Any]) -> Any:
        try:
            response = request()
            return json.loads(response.data)
        except ApiException as exc:
            detail = kube.status_message(exc)
            if exc.status == 403:
                scope = f" in namespace {call.namespace}" if call.namespace else " (cluster-scoped)"
                raise PermissionDeniedError(
                    f"forbidden to {call.verb} {call.target()}: grant the verb {call.verb!r} on "
                    f"{call.resource!r}{scope} to this user or ServiceAccount (apiserver: {detail})"
                ) from exc
            if exc.status == 404:
                raise ObjectMissingError(f"{call.target()} not found (apiserver: {detail})") from exc
            raise ClusterError(f"cannot {call.verb} {call.target()}: HTTP {exc.status}: {detail}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ClusterError(f"cannot reach the apiserver at {self._host}: {exc}") from exc

    # --- Secrets -------------------------------------------------------------------------------------

    def read_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret, or None when it does not exist."""
        call = Call("get", SECRETS, name, namespace)
        try:
            return cast(
                Secret,
                self._call(
                    call,
                    lambda: self._core.read_namespaced_secret(
                        name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                    ),
                ),
            )
        except ObjectMissingError:
            return None

    def create_secret(self, body: Secret) -> Secret:
        metadata = body["metadata"]
        call = Call("create", SECRETS, metadata["name"], metadata["namespace"])
        return cast(
            Secret,
            self._call(
                call,
                lambda: self._core.create_namespaced_secret(
                    metadata["namespace"],
                    cast(Any, body),
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            ),
        )

    def patch_secret(self, namespace: str, name: str, operations: list[PatchOperation]) -> Secret:
        call = Call("patch", SECRETS, name, namespace)
        return cast(
            Secret,
            self._call(
                call,
                lambda: self._core.patch_namespaced_secret(
                    name,
                    namespace,
                    cast(Any, operations),
                    _content_type=JSON_PATCH,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            ),
        )

    # --- MutatingWebhookConfiguration -----------------------------------------------------------------

    def read_webhook_configuration(self, name: str) -> MutatingWebhookConfiguration:
        call = Call("get", WEBHOOK_CONFIGURATIONS, name)
        try:
            return cast(
                MutatingWebhookConfiguration,
                self._call(
                    call,
                    lambda: self._admission.read_mutating_webhook_configuration(
                        name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                    ),
                ),
            )
        except ObjectMissingError as exc:
            raise ObjectMissingError(
                f"{exc}: apply the manifests (kubectl apply -k manifests/...) before `certs install`"
            ) from exc

    def patch_webhook_configuration(
        self, name: str, operations: list[PatchOperation]
    ) -> MutatingWebhookConfiguration:
        call = Call("patch", WEBHOOK_CONFIGURATIONS, name)
        return cast(
            MutatingWebhookConfiguration,
            self._call(
                call,
                lambda: self._admission.patch_mutating_webhook_configuration(
                    name,
                    cast(Any, operations),
                    _content_type=JSON_PATCH,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            ),
        )

    # --- composite -------------------------------------------------------------------------------------

    def ensure_secret(
        self,
        namespace: str,
        name: str,
        secret_type: str,
        files: Mapping[str, bytes],
        current: Secret | None,
    ) -> str | None:
        """Create the Secret or patch the keys that differ; return what was done, or None if nothing."""
        if current is None:
            self.create_secret(new_secret(name, namespace, secret_type, files))
            return f"created Secret {namespace}/{name} ({', '.join(sorted(files))})"
        existing_type = current.get("type", "Opaque")
        if existing_type != secret_type:
            raise ClusterError(
                f"Secret {namespace}/{name} exists with type {existing_type!r}, but {secret_type!r} is "
                "needed; the type of a Secret cannot change: delete it and run the command again"
            )
        operations = secret_patch(current, files)
        if not operations:
            return None
        self.patch_secret(namespace, name, operations)
        changed = sorted(
            op["path"].rsplit("/", 1)[-1] for op in operations if op["path"].startswith("/data/")
        )
        return f"updated Secret {namespace}/{name} ({', '.join(changed)})"
