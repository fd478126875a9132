"""Bind: re-check fit and reserve the EPC under the ledger lock, then create the Binding.

``bind_pod`` holds ``ledger.lock`` from the fit check until the reservation is recorded, so two
binds (and the watch) cannot interleave: concurrent binds never overcommit a node. The Binding is
created after the lock is released (a failed one withdraws the reservation), so the API server's
round trip does not hold up filter calls. The Binding is created by a :class:`Binder` — the API
server (:class:`ApiBinder`) or memory for snapshot mode and ``simulate`` (:class:`MemoryBinder`).

The bind request names the pod but carries no resources, so the pod's EPC comes from the last
filter call for that pod (:class:`PendingPods`, bounded), else from the binder (the API server, or
the snapshot's pending pods).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from confidential_pods import kube
from confidential_pods.epc import effective_epc
from confidential_pods.errors import BindRefused, MalformedInput
from confidential_pods.profiles import Profile
from confidential_pods.wire import decode_json, mapping
from extender.ledger import EpcLedger
from extender.podepc import PodEpc, pod_priority
from extender.scheduling import unfit_reason
from extender.wire import BindRequest


@dataclass(frozen=True, slots=True)
class KnownPod:
    """What a bind needs of a pod it was not asked to filter: its UID ("" when unknown), EPC (bytes),
    the node it is already assigned to ("" when pending) and why its EPC cannot be read ("" when it can)."""

    uid: str
    epc: int
    node: str = ""
    unreadable: str = ""
    priority: int = 0

    @classmethod
    def of(cls, pod: Mapping[str, Any], profile: Profile) -> KnownPod:
        """From the pod's raw JSON: ``metadata.uid`` as it is there, its effective EPC and its node."""
        metadata = mapping(pod.get("metadata"))
        uid = metadata.get("uid")
        unreadable: list[str] = []
        epc = effective_epc(pod, profile, unreadable)
        node = mapping(pod.get("spec")).get("nodeName")
        return cls(
            uid=str(uid) if uid else "",
            epc=epc,
            node=node if isinstance(node, str) else "",
            unreadable=unreadable[0] if unreadable else "",
            priority=pod_priority(pod),
        )


class Binder(Protocol):
    """Creates Bindings and finds pods the extender was not asked to filter.

    ``final``: a bind is final at once (memory: snapshot mode, ``simulate``) — the pod then holds its EPC
    as used; otherwise (the API server) it is a reservation until the watch shows the pod.
    """

    final: bool

    def bind(self, request: BindRequest) -> None:
        """Bind the pod to ``request.node``; raise :class:`BindRefused` with a reason when that fails."""

    def find_pod(self, namespace: str, name: str, profile: Profile) -> KnownPod | None:
        """The pod's UID and EPC, or None when it does not exist; raise BindRefused on other errors."""

    def deleted(self, pods: Sequence[PodEpc]) -> Departures:
        """Which of ``pods`` no longer exist; a pod that cannot be read counts as still there."""


@dataclass(frozen=True, slots=True)
class Departures:
    """What the API server said of pods on their way out (:meth:`Binder.deleted`): the uids it no longer
    has, how many of the pods it answered for (in order), and why not for the rest ("" when for all)."""

    deleted: tuple[str, ...] = ()
    answered: int = 0
    error: str = ""


@dataclass(frozen=True)
class BindOutcome:
    """Result of one bind: ``error`` empty means bound."""

    error: str
    epc: int = 0

    @property
    def bound(self) -> bool:
        return not self.error


class PendingPods:
    """EPC and priority of pods seen by filter/prioritize, by UID, for the bind that follows (bounded LRU)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._epc: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, uid: str, epc: int, priority: int = 0) -> None:
        with self._lock:
            self._epc[uid] = (epc, priority)
            self._epc.move_to_end(uid)
            while len(self._epc) > self._capacity:
                self._epc.popitem(last=False)

    def pop(self, uid: str) -> int | None:
        """The pod's EPC, forgotten here (see :meth:`pop_pod` for its priority too)."""
        found = self.pop_pod(uid)
        return None if found is None else found[0]

    def pop_pod(self, uid: str) -> tuple[int, int] | None:
        """(EPC, priority) of the pod, forgotten here; None when unknown."""
        with self._lock:
            return self._epc.pop(uid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._epc)


def pod_epc_for_bind(
    request: BindRequest, pending: PendingPods, binder: Binder, profile: Profile
) -> int | str:
    """The EPC (bytes) of the pod to bind, or a reason why it cannot be known."""
    found = pod_for_bind(request, pending, binder, profile)
    return found if isinstance(found, str) else found[0]


def pod_for_bind(
    request: BindRequest, pending: PendingPods, binder: Binder, profile: Profile
) -> tuple[int, int] | str:
    """(EPC in bytes, priority) of the pod to bind, or a reason why they cannot be known."""
    remembered = pending.pop_pod(request.pod_uid)
    if remembered is not None:
        return remembered
    try:
        pod = binder.find_pod(request.pod_namespace, request.pod_name, profile)
    except BindRefused as exc:
        return f"cannot read pod {request.pod_namespace}/{request.pod_name}: {exc}"
    if pod is None:
        return f"pod {request.pod_namespace}/{request.pod_name} not found"
    if pod.uid and pod.uid != request.pod_uid:
        return f"pod {request.pod_namespace}/{request.pod_name} has UID {pod.uid}, not {request.pod_uid}"
    if pod.unreadable:
        who = f"{request.pod_namespace}/{request.pod_name}"
        return f"pod {who}: SGX EPC request cannot be read: {pod.unreadable}"
    return pod.epc, pod.priority


def bind_pod(
    request: BindRequest,
    epc: int,
    *,
    ledger: EpcLedger,
    binder: Binder,
    profile: Profile,
    now: float,
    priority: int = 0,
) -> BindOutcome:
    """Check fit and reserve in one step under ``ledger.lock``, then bind; on refusal, unreserve.

    The Binding is created outside the lock, so filter and prioritize calls for the next pods do not wait
    for the API server's round trip; the reservation, taken before, keeps every concurrent bind and filter
    from counting that EPC as free (kube-scheduler's "assume" step). Nothing stays reserved on refusal.
    """
    with ledger.lock:
        held = ledger.held(request.node, request.pod_uid, priority)
        verdict = unfit_reason(epc, ledger.usage(request.node), profile.epc_resource, held)
        if verdict is not None:
            return BindOutcome(error=f"node {request.node}: {verdict[0]}", epc=epc)
        previous = ledger.reservation(request.pod_uid)  # an earlier bind of this pod (refused below)
        if epc > 0:
            ledger.reserve(_pod_epc(request, epc, priority), now)
    try:
        binder.bind(request)
    except BindRefused as exc:
        if epc > 0:  # take back this bind's reservation, and give back the one it replaced
            with ledger.lock:
                ledger.unreserve(request.pod_uid)
                if previous is not None:
                    ledger.reserve(previous.pod, previous.since)
        who = f"{request.pod_namespace}/{request.pod_name}"
        return BindOutcome(error=f"binding {who} failed: {exc}", epc=epc)
    if binder.final and epc > 0:  # nothing will confirm it: the reservation becomes use now
        ledger.set_pod(_pod_epc(request, epc, priority))
    return BindOutcome(error="", epc=epc)


def _pod_epc(request: BindRequest, epc: int, priority: int) -> PodEpc:
    """The ledger entry of the pod being bound (field order of :class:`PodEpc`)."""
    return PodEpc(request.pod_uid, request.pod_namespace, request.pod_name, request.node, epc, priority)


class MemoryBinder:
    """Binds in memory only (snapshot mode, ``simulate``): a bind is final, and remembered.

    The snapshot's pods by ``namespace/name`` answer a bind for a pod that was never filtered: ``pods``
    as raw JSON, or ``known`` as just their UID, EPC and node (``extender serve --snapshot`` keeps only
    that: 50,000 parsed pods would cost over a gigabyte). A pod is bound at most once, and a pod the
    snapshot shows assigned to a node is already bound.
    """

    def __init__(
        self,
        pods: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        known: Mapping[str, KnownPod] | None = None,
        final: bool = True,
    ) -> None:
        #: False makes it stand in for the API server in tests: binds stay reservations until confirmed.
        self.final = final
        self._pods = dict(pods or {})
        self._known = dict(known or {})
        self._lock = threading.Lock()
        self.bindings: dict[str, str] = {}

    def bind(self, request: BindRequest) -> None:
        assigned = self._assigned_node(f"{request.pod_namespace}/{request.pod_name}")
        with self._lock:
            if assigned:
                raise BindRefused(f"pod is already bound to {assigned}")
            if request.pod_uid in self.bindings:
                raise BindRefused(f"pod is already bound to {self.bindings[request.pod_uid]}")
            self.bindings[request.pod_uid] = request.node

    def deleted(self, pods: Sequence[PodEpc]) -> Departures:
        """None: in memory, a pod exists until the ledger forgets it (snapshot mode, ``simulate``)."""
        return Departures(answered=len(pods))

    def find_pod(self, namespace: str, name: str, profile: Profile) -> KnownPod | None:
        key = f"{namespace}/{name}"
        known = self._known.get(key)
        if known is not None:
            return known
        pod = self._pods.get(key)
        return KnownPod.of(pod, profile) if pod is not None else None

    def _assigned_node(self, key: str) -> str:
        known = self._known.get(key)
        if known is not None:
            return known.node
        node = mapping(mapping(self._pods.get(key)).get("spec")).get("nodeName")
        return node if isinstance(node, str) else ""


class ApiBinder:
    """Creates ``pods/binding`` through the API server, reads pods with the official client.

    The Binding is one raw JSON POST over the client's connection pool (:class:`~confidential_pods.kube.
    RawApi`): the generated method's validation and serialization were most of ``/bind``'s CPU. Pods are
    read as raw JSON too (``_preload_content=False``): never round-tripped through the typed models.
    """

    final = False

    #: Seconds all the reads of one :meth:`deleted` may take together: it runs inside a filter call, which
    #: kube-scheduler waits for with its whole scheduling queue (``httpTimeout``: 10 s in the shipped
    #: configuration, after which the call fails).
    DEPARTURES_SECONDS = 2.0

    def __init__(self, api_client: Any, timeout: float = 10.0) -> None:
        from kubernetes import client

        # Any: raw dict bodies and raw responses, not the typed models the stubs promise.
        self._core: Any = client.CoreV1Api(api_client)
        self._raw = kube.RawApi(api_client)
        self._timeout = timeout

    def bind(self, request: BindRequest) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": request.pod_name,
                "namespace": request.pod_namespace,
                "uid": request.pod_uid,
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": request.node},
        }
        namespace, name = quote(request.pod_namespace, safe=""), quote(request.pod_name, safe="")
        path = f"/api/v1/namespaces/{namespace}/pods/{name}/binding"
        try:
            status, answer = self._raw.post(path, json.dumps(body).encode(), self._timeout)
        except Exception as exc:  # network errors from urllib3: report, never crash the handler
            raise BindRefused(f"API server unreachable: {exc}") from None
        if status >= 300:
            raise BindRefused(f"{kube.body_message(answer)} (HTTP {status})")

    def find_pod(self, namespace: str, name: str, profile: Profile) -> KnownPod | None:
        pod = self.read_pod(namespace, name)
        return KnownPod.of(pod, profile) if pod is not None else None

    def deleted(self, pods: Sequence[PodEpc]) -> Departures:
        """A GET each, in order, sent once (no retry) within :attr:`DEPARTURES_SECONDS` for them all.

        Gone: 404, or the name now belongs to another pod that is not on the node (one recreated there may
        hold the EPC the ledger still gives the old one: it stays counted). The first read that fails (or
        finds the time spent) ends the round: the rest count as still there.
        """
        deadline = time.monotonic() + self.DEPARTURES_SECONDS
        gone: list[str] = []
        for answered, pod in enumerate(pods):
            left = deadline - time.monotonic()
            if left <= 0:
                return Departures(tuple(gone), answered, f"no time left ({self.DEPARTURES_SECONDS:g} s)")
            path = f"/api/v1/namespaces/{quote(pod.namespace, safe='')}/pods/{quote(pod.name, safe='')}"
            try:
                status, answer = self._raw.get(path, left)
            except Exception as exc:  # network errors from urllib3
                return Departures(tuple(gone), answered, f"API server unreachable: {exc}")
            if status == 404:
                gone.append(pod.uid)
                continue
            if status != 200:
                return Departures(tuple(gone), answered, f"{kube.body_message(answer)} (HTTP {status})")
            found = _json_object(answer)
            if found is None:
                return Departures(tuple(gone), answered, "the answer is not a JSON object (HTTP 200)")
            another = mapping(found.get("metadata")).get("uid") != pod.uid
            if another and mapping(found.get("spec")).get("nodeName") != pod.node:
                gone.append(pod.uid)
        return Departures(tuple(gone), len(pods))

    def read_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The pod as raw JSON, or None when it does not exist; raise BindRefused on other errors."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._core.read_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            )
            data = json.loads(response.data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise BindRefused(_api_message(exc)) from None
        except Exception as exc:
            raise BindRefused(f"API server unreachable: {exc}") from None
        return data if isinstance(data, dict) else None


def _json_object(answer: bytes) -> Mapping[str, Any] | None:
    """The answer as a JSON object, or None when it is not one (or not JSON Python's reader can hold)."""
    try:
        found = decode_json(answer)
    except MalformedInput:
        return None
    return found if isinstance(found, dict) else None


def _api_message(exc: Any) -> str:
    """An API error for a bind's refusal: the Status message and the HTTP status."""
    return f"{kube.status_message(exc)} (HTTP {exc.status})"
