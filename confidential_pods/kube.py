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
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body or getattr(exc, "reason", None) or "no details")[:1000]
