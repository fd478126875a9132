"""The official Kubernetes client, set up once: credentials, and what an API error says.

Both components and the certs commands reach the API server the same way: :func:`api_client` loads
``--kubeconfig`` when given, else the in-cluster ServiceAccount when running in a pod, else the
default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) as kubectl does. Bodies go out and come back
as raw JSON (``_preload_content=False``); pods are never round-tripped through the client's models.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from confidential_pods import __version__
from confidential_pods.errors import ConfidentialPodsError


class CredentialsError(ConfidentialPodsError):
    """No usable credentials for the API server (a kubeconfig that does not load, no ServiceAccount)."""


#: Where a pod's ServiceAccount namespace is mounted (kubectl's default namespace in a pod).
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def configuration(
    kubeconfig: str | None = None, context: str | None = None, *, retries: int | None = None
) -> client.Configuration:
    """The client configuration: ``kubeconfig``, else in-cluster, else the default kubeconfig;
    ``context`` names a kubeconfig context (in a pod too: then the default kubeconfig is read).
    ``retries``: urllib3's retries per request (None: urllib3's default of 3, each logged as a warning);
    the command-line tools pass 0, so an unreachable API server is one error, not three warnings first."""
    loaded = client.Configuration()
    loaded.retries = retries
    try:
        if not kubeconfig and not context and _in_cluster():
            config.load_incluster_config(client_configuration=loaded)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or None, context=context or None, client_configuration=loaded
            )
    except (ConfigException, OSError) as exc:
        raise CredentialsError(
            f"cannot load API server credentials from {_where(kubeconfig)}: {exc}"
        ) from None
    return loaded


def api_client(
    kubeconfig: str | None = None, context: str | None = None, *, retries: int | None = None
) -> client.ApiClient:
    """An API client (see :func:`configuration`)."""
    return client.ApiClient(configuration(kubeconfig, context, retries=retries))


def network_reason(exc: BaseException) -> str:
    """The short cause of a network error (``Connection refused``, ``timed out``): urllib3 wraps the
    socket's error in one or two exceptions whose text repeats the pool, the host and the URL."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TimeoutError) or "timed out" in str(current).lower():
            return "timed out"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    return str(exc).rsplit(": ", 1)[-1].strip("()\"'") or type(exc).__name__


def default_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace kubectl would use without ``-n``: the kubeconfig context's ``namespace`` (``context``,
    else the current one), else ``default``; in a pod without a kubeconfig, the pod's own namespace."""
    if not kubeconfig and not context and _in_cluster():
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
                return file.read().strip() or "default"
        except OSError:
            return "default"
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig or None)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        raise CredentialsError(f"cannot read the namespace from {_where(kubeconfig)}: {exc}") from None
    chosen = next((c for c in contexts or () if c.get("name") == context), None) if context else current
    if context and chosen is None:
        raise CredentialsError(f"context {context!r} not found in {_where(kubeconfig)}")
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _where(kubeconfig: str | None) -> str:
    """Where the credentials were looked for, as the kubernetes client does: ``--kubeconfig``, else
    ``$KUBECONFIG`` (named: a wrong path there is the usual cause), else the pod's or ~/.kube/config."""
    if kubeconfig:
        return f"kubeconfig {kubeconfig}"
    if os.environ.get("KUBECONFIG"):
        return f"$KUBECONFIG ({os.environ['KUBECONFIG']})"
    return "the in-cluster ServiceAccount or ~/.kube/config"


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

    Two more costs of the generated path are left out. The credentials are asked of the client at most
    once per :data:`AUTH_REFRESH_SECONDS`: its refresh hook (both the kubeconfig and the in-cluster loader
    install one) re-applies the whole configuration on every call, and setting ``host`` again re-reads the
    proxy variables from the whole process environment (a pod's environment holds a variable per Service
    of its namespace). And without a proxy the request goes to the apiserver's own connection pool
    instead of through the pool manager, which parses the URL and looks the pool up every time.
    """

    #: How long the credentials asked of the client are used before asking again. Tokens rotate in
    #: minutes (the in-cluster loader re-reads its file every minute, kubelet replaces it well before it
    #: expires), so a second of reuse never sends an expired one.
    AUTH_REFRESH_SECONDS = 1.0

    def __init__(self, api: client.ApiClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._configuration = api.configuration
        self._manager = api.rest_client.pool_manager
        self._host = str(api.configuration.host).rstrip("/")
        self._prefix = urllib3.util.parse_url(self._host).path or ""  # an apiserver behind a path prefix
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": f"confidential-pods/{__version__}"}  # fmt: skip
        self._clock = clock
        self._auth: dict[str, str] = {}
        self._auth_until = -math.inf
        self._auth_lock = threading.Lock()
        self._pool: urllib3.HTTPConnectionPool | None = None

    def _credentials(self) -> dict[str, str]:
        now = self._clock()
        with self._auth_lock:
            if now >= self._auth_until:
                auth = {}
                for setting in self._configuration.auth_settings().values():
                    if setting.get("in") == "header" and setting.get("value"):
                        auth[str(setting["key"])] = str(setting["value"])
                self._auth, self._auth_until = auth, now + self.AUTH_REFRESH_SECONDS
            return self._auth

    def _apiserver_pool(self) -> urllib3.HTTPConnectionPool | None:
        """The manager's pool of connections to the apiserver (the one its own requests use, with its TLS
        settings); None through an HTTP(S) proxy, where the manager must address the proxy itself."""
        if isinstance(self._manager, urllib3.ProxyManager):
            return None
        if self._pool is None:
            self._pool = self._manager.connection_from_url(self._host)
        return self._pool

    def post(self, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``path``; (HTTP status, answer). Network errors raise as urllib3's."""
        return self._request("POST", path, body, timeout)

    def get(self, path: str, timeout: float) -> tuple[int, bytes]:
        """GET ``path``, once (no retry); (HTTP status, answer). Network errors raise as urllib3's."""
        return self._request("GET", path, None, timeout)

    def _request(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, bytes]:
        headers = self._headers | self._credentials()
        pool = self._apiserver_pool()
        if pool is None:
            response = self._manager.request(
                method, self._host + path, body=body, headers=headers, timeout=timeout, retries=False
            )
        else:
            response = pool.urlopen(
                method, self._prefix + path, body=body, headers=headers, timeout=timeout, retries=False,
                assert_same_host=False,
            )  # fmt: skip
        return int(response.status), bytes(response.data)
