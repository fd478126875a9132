"""The official Kubernetes client, set up once: credentials, and what an API error says.

Both components and the certs commands reach the API server the same way: :func:`api_client` loads
``--kubeconfig`` when given, else the in-cluster ServiceAccount when running in a pod, else the
default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) as kubectl does. Bodies go out and come back
as raw JSON (``_preload_content=False``); pods are never round-tripped through the client's models.
"""

from __future__ import annotations

import json
import os
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from confidential_pods import __version__
from confidential_pods.errors import ConfidentialPodsError


class CredentialsError(ConfidentialPodsError):
    """No usable credentials for the API server (a kubeconfig that does not load, no ServiceAccount)."""


def configuration(kubeconfig: str | None = None) -> client.Configuration:
    """The client configuration: ``kubeconfig``, else in-cluster, else the default kubeconfig."""
    loaded = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=loaded)  # type: ignore[no-untyped-call]
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=loaded)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(client_configuration=loaded)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        where = (
            f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster ServiceAccount or ~/.kube/config"
        )
        raise CredentialsError(f"cannot load API server credentials from {where}: {exc}") from None
    return loaded


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client (see :func:`configuration`)."""
    return client.ApiClient(configuration(kubeconfig))


def status_message(exc: Any) -> str:
    """What an ``ApiException`` says: its ``Status.message``, else the body, else the HTTP reason."""
    return body_message(getattr(exc, "body", None), getattr(exc, "reason", None))


def body_message(body: bytes | str | None, reason: str | None = None) -> str:
    """What an error answer's body says: its ``Status.message``, else the body, else ``reason``."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body or reason or "no details")[:1000]


class RawApi:
    """Requests of a known shape sent straight through the client's own connection pool (its TLS, proxy
    and credentials, the token re-read as the client re-reads it), past the generated client's argument
    validation and serialization: the extender's ``/bind`` spent most of its CPU there (docs/performance.md).
    """

    def __init__(self, api: client.ApiClient) -> None:
        self._configuration = api.configuration
        self._pool = api.rest_client.pool_manager
        self._host = str(api.configuration.host).rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": f"confidential-pods/{__version__}"}  # fmt: skip

    def post(self, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``path``; (HTTP status, answer). Network errors raise as urllib3's."""
        headers = dict(self._headers)
        for auth in self._configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"])] = str(auth["value"])
        response = self._pool.request(
            "POST", self._host + path, body=body, headers=headers, timeout=timeout, retries=False
        )
        return int(response.status), bytes(response.data)
