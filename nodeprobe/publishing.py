"""The node probe's shell: run the checks every interval and publish the Node conditions through
``nodes/status`` (a strategic merge patch of ``status.conditions`` holding only our types, so the kubelet's
and other writers' conditions are untouched: ``conditions`` merges on ``type``).

The node's conditions are read once at start (and again after a failed write); afterwards the probe knows
what it wrote, so a steady node costs no request but the heartbeat's write (:mod:`nodeprobe.condition`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from confidential_pods import kube
from confidential_pods.errors import ConfidentialPodsError
from nodeprobe.checks import ProbeConfig, epc_verdict, run_checks, verdict
from nodeprobe.condition import (
    DEFAULT_HEARTBEAT,
    EPC_CGROUP,
    READY,
    NodeCondition,
    Verdict,
    conditions_by_type,
    decide_all,
)

logger = logging.getLogger(__name__)

STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
#: Seconds for one API request (connect + read).
REQUEST_TIMEOUT: Final = 30
KINDS: Final = (READY, EPC_CGROUP)


class PublishError(ConfidentialPodsError):
    """The node's conditions could not be read or written (the message names the node and the cause)."""


class NodeStatus(Protocol):
    """The two requests the publisher makes."""

    def read_conditions(self) -> object: ...

    def patch_conditions(self, conditions: list[NodeCondition]) -> None: ...


class ApiNodeStatus:
    """:class:`NodeStatus` of one Node through the apiserver (raw JSON: nodes are never read into models)."""

    def __init__(self, api: client.ApiClient, node: str) -> None:
        self._core = client.CoreV1Api(api)
        self._node = node
        self._host = api.configuration.host

    def read_conditions(self) -> object:
        """``status.conditions`` of the node (needs ``get`` on ``nodes``)."""
        response = self._call("get", lambda: self._core.read_node(
            self._node, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
        ))  # fmt: skip
        try:
            node = json.loads(response.data)
        except ValueError:
            raise PublishError(f"node {self._node}: the apiserver's answer is not JSON") from None
        status = node.get("status") if isinstance(node, dict) else None
        return status.get("conditions") if isinstance(status, dict) else None

    def patch_conditions(self, conditions: list[NodeCondition]) -> None:
        """Merge ``conditions`` into the node's (needs ``patch`` on ``nodes/status``)."""
        body: dict[str, Any] = {"status": {"conditions": conditions}}
        self._call("patch", lambda: self._core.patch_node_status(
            self._node, body, _content_type=STRATEGIC_MERGE_PATCH, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        ))  # fmt: skip

    def _call(self, verb: str, request: Callable[[], Any]) -> Any:
        resource = "nodes/status" if verb == "patch" else "nodes"
        try:
            return request()
        except ApiException as exc:
            detail = kube.status_message(exc)
            if exc.status == 403:
                raise PublishError(
                    f"forbidden to {verb} {resource} of node {self._node}: grant {verb!r} on {resource!r} "
                    f"to this ServiceAccount (apiserver: {detail})"
                ) from None
            raise PublishError(f"cannot {verb} node {self._node}: HTTP {exc.status}: {detail}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PublishError(
                f"cannot reach the apiserver at {self._host}: {kube.network_reason(exc)}"
            ) from None


class Publisher:
    """Decides each round what to write (:func:`nodeprobe.condition.decide_all`) and writes it."""

    def __init__(
        self,
        status: NodeStatus,
        heartbeat: timedelta = DEFAULT_HEARTBEAT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._status = status
        self._heartbeat = heartbeat
        self._clock = clock
        self._known: dict[str, Mapping[str, object]] | None = None
        self.writes = 0

    def publish(self, verdicts: Mapping[str, Verdict]) -> bool:
        """Publish ``verdicts`` (type → verdict); whether a write was made. Raises :class:`PublishError`,
        after which the node is read again before the next decision."""
        if self._known is None:
            self._known = conditions_by_type(self._status.read_conditions(), list(verdicts))
        conditions, write = decide_all(self._known, verdicts, self._clock(), self._heartbeat)
        if write:
            try:
                self._status.patch_conditions(conditions)
            except PublishError:
                self._known = None
                raise
            self._known = {c["type"]: c for c in conditions}
            self.writes += 1
        return write


def verdicts(config: ProbeConfig) -> dict[str, Verdict]:
    """One probe round: the verdict of each condition type we publish."""
    results = run_checks(config)
    return {READY: verdict(results), EPC_CGROUP: epc_verdict(results)}


def run(
    probe: Callable[[], Mapping[str, Verdict]],
    publisher: Publisher,
    interval: timedelta,
    stop: threading.Event,
) -> None:
    """Probe and publish every ``interval`` until ``stop`` is set; a failed round is logged (a warning when
    the error is new, then quietly while it repeats), not fatal."""
    last_error = ""
    while not stop.is_set():
        found = probe()
        try:
            written = publisher.publish(found)
        except PublishError as exc:
            logger.log(logging.DEBUG if str(exc) == last_error else logging.WARNING, "%s", exc)
            last_error = str(exc)
        else:
            last_error = ""
            ready = found[READY]
            logger.log(
                logging.INFO if written else logging.DEBUG,
                "%s %s %s: %s (%s)", READY, ready.status, ready.reason, ready.message,
                "written" if written else "unchanged",
            )  # fmt: skip
        stop.wait(interval.total_seconds())
