"""The Pod Security level a namespace enforces, read from the API server and kept for a short while.

An AdmissionReview carries the pod, not its namespace's labels; Pod Security admission runs after the
mutating webhooks and refuses a hostPath volume (the host's AESM socket) in namespaces labelled
``pod-security.kubernetes.io/enforce: baseline`` or ``restricted``. So that the user reads *our* message,
with what to do instead, the webhook reads the namespace's labels: one ``GET`` per namespace per
:data:`TTL_SECONDS`, with a short timeout; when the API server cannot be asked (no credentials, a
timeout, RBAC), the level is unknown and the pod is judged without it (Pod Security admission then has
the last word, with its own message).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, get_args

from webhook.plan import PodSecurityLevel

logger = logging.getLogger(__name__)

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
#: Seconds a namespace's level is kept (a relabelled namespace is seen within this).
TTL_SECONDS = 30.0
#: Seconds an unanswered lookup is not retried for that namespace.
FAILURE_TTL_SECONDS = 5.0
#: Seconds one lookup may take (it holds up one admission review).
TIMEOUT_SECONDS = 1.0
MAX_NAMESPACES = 10_000

Lookup = Callable[[str], PodSecurityLevel | None]


def level_of(namespace: object) -> PodSecurityLevel | None:
    """The enforced level in a Namespace object's labels (None: unlabelled, i.e. the cluster default)."""
    metadata = namespace.get("metadata") if isinstance(namespace, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    value = labels.get(ENFORCE_LABEL) if isinstance(labels, dict) else None
    return value if value in get_args(PodSecurityLevel) else None


class NamespaceLevels:
    """``levels(namespace)``: the level it enforces, cached; None when unknown. Thread-safe."""

    def __init__(
        self,
        fetch: Callable[[str], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = TTL_SECONDS,
        failure_ttl: float = FAILURE_TTL_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._ttl = ttl
        self._failure_ttl = failure_ttl
        self._cache: OrderedDict[str, tuple[float, PodSecurityLevel | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, namespace: str) -> PodSecurityLevel | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(namespace)
            if cached is not None and cached[0] > now:
                return cached[1]
        try:
            level, expires = level_of(self._fetch(namespace)), now + self._ttl
        except Exception as exc:  # any failure means "unknown": the review goes on without it
            if not self._warned:
                self._warned = True
                logger.warning(
                    "cannot read namespace %s for its Pod Security level (%s); judging without",
                    namespace,
                    exc,
                )
            level, expires = None, now + self._failure_ttl
        with self._lock:
            self._cache[namespace] = (expires, level)
            self._cache.move_to_end(namespace)
            while len(self._cache) > MAX_NAMESPACES:
                self._cache.popitem(last=False)
        return level


def api_lookup(api_client: Any) -> NamespaceLevels:
    """Levels read with ``GET /api/v1/namespaces/<name>`` (RBAC: ``get`` on ``namespaces``)."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)

    def fetch(namespace: str) -> Any:
        response = core.read_namespace(namespace, _preload_content=False, _request_timeout=TIMEOUT_SECONDS)
        return json.loads(response.data)

    return NamespaceLevels(fetch)
