"""The ledger feed: list then watch Nodes, assigned Pods and nominated Pods into the EPC ledger.

Two parts:

* a pure core in ``watchevents.py`` — :func:`~extender.watchevents.apply_event` applies one decoded
  watch event to the ledger and says how to go on (resume from a resourceVersion, relist after 410
  Gone, back off after any other error event); ``replace_nodes`` / ``replace_pods`` apply a fresh
  full list of one kind atomically; ``backoff_delay`` is the retry schedule;
* this thin shell — :class:`LedgerFeed` runs one daemon thread per kind (list with pagination, then watch
  from the list's resourceVersion with bookmarks) and one that expires reservations. The kinds: Nodes;
  assigned Pods (``spec.nodeName!=``: they hold EPC); pending Pods that preemption nominated to a node
  (``spec.nodeName=,status.nominatedNodeName!=``: EPC held for them there). A nominated pod that is bound
  leaves the second selection (the apiserver sends DELETED) and enters the first.

Kubernetes JSON stays JSON: lists are read with ``_preload_content=False`` one page (``limit``) at a
time and watch streams are split into lines with ``kubernetes.watch``'s own ``iter_resp_lines``, then
each line is decoded with :func:`json.loads` and reduced to :class:`~extender.podepc.PodEpc` at once.
Nothing is deserialized into the client's models (slow, and lossy: they drop fields they do not know).

``kubernetes.watch.Watch.stream`` itself is not used: with ``deserialize=False`` (checked with client
37.0.2) an ERROR event raises ``KeyError: 'raw_object'`` instead of surfacing the 410, and its built-in
resume re-sends
the *first* resourceVersion when it does not deserialize (it only tracks the version of model objects),
which replays history or ends in a second 410. The feed keeps the resourceVersion of every event and
bookmark itself, which is what client-go's reflector does.

Fault handling (the ledger must equal what a fresh list gives after any fault):

* 410 Gone — an ERROR event with code 410 (reason ``Expired``/``Gone``) or an ``ApiException`` 410,
  also when a list's ``continue`` token expired — relists that kind and replaces its state atomically;
* any other error, a dropped connection or a malformed line resumes the watch from the last
  resourceVersion after an exponential backoff with jitter (capped); after
  ``relist_after_failures`` consecutive failures the feed relists instead;
* a watch that ends normally (the server's ``timeoutSeconds``) is resumed at once.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from prometheus_client import CollectorRegistry
from urllib3.exceptions import HTTPError

from confidential_pods.profiles import Profile
from extender.ledger import EpcLedger
from extender.metrics import FeedMetrics
from extender.watchevents import (
    GONE,
    KINDS,
    Applied,
    Kind,
    Listing,
    Relist,
    apply_event,
    backoff_delay,
    resource_version,
)

logger = logging.getLogger(__name__)

#: Field selector of the pod list and watch: only pods bound to a node hold EPC.
ASSIGNED_PODS = "spec.nodeName!="
#: Field selector of the nominated-pod list and watch: pending pods with a node nominated by preemption.
NOMINATED_PODS = "spec.nodeName=,status.nominatedNodeName!="
SELECTORS: dict[Kind, str] = {"Pod": ASSIGNED_PODS, "Nominated": NOMINATED_PODS}
#: A watch that ends sooner than this with no event in it counts as a failure (backoff).
QUICK_END_SECONDS = 1.0
#: Items per list page (client-go's reflector uses 500 as well).
PAGE_SIZE = 500


# --- the shell ------------------------------------------------------------------------------------


class _Gone(Exception):
    """The watch reported 410 Gone: relist."""


class _WatchFailed(Exception):
    """The watch reported an error event, or a line was not a watch event: back off and resume."""


@dataclass(frozen=True, slots=True)
class _ListResult:
    resource_version: str
    items: int


class LedgerFeed:
    """Keeps an :class:`EpcLedger` equal to the cluster's Nodes and assigned Pods.

    ``start()`` starts daemon threads; ``ready()`` is True once every kind was fully listed;
    ``stop()`` ends the threads (closing open watches) and waits for them.

    ``registry``: where the feed's counters go (the app's, so that ``/metrics`` shows them).
    ``on_expired``: called with the uids of reservations the background expiry dropped (e.g. to
    count them in the app's ``reservations_expired`` counter).
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        ledger: EpcLedger,
        profile: Profile,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rand: Callable[[], float] = random.random,
        reservation_ttl: float = 60.0,
        page_size: int = PAGE_SIZE,
        watch_timeout: tuple[int, int] = (300, 600),
        backoff_base: float = 0.8,
        backoff_cap: float = 30.0,
        relist_after_failures: int = 5,
        registry: CollectorRegistry | None = None,
        on_expired: Callable[[list[str]], object] | None = None,
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._on_expired = on_expired
        self._ledger = ledger
        self._profile = profile
        self._clock = clock
        self._stopping = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._rand = rand
        self._ttl = reservation_ttl
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._relist_after = relist_after_failures
        self.metrics = FeedMetrics(registry)
        self._listed = {kind: threading.Event() for kind in KINDS}
        self._versions: dict[Kind, str | None] = dict.fromkeys(KINDS)
        self._open: dict[Kind, Any] = {}
        self._open_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listing and watching in background daemon threads."""
        if self._threads:
            raise RuntimeError("LedgerFeed already started")
        for kind in KINDS:
            self._threads.append(
                threading.Thread(target=self._run, args=(kind,), name=f"ledger-feed-{kind}", daemon=True)
            )
        self._threads.append(threading.Thread(target=self._expire_loop, name="ledger-expiry", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads: close open watches and wait up to ``timeout`` seconds for them."""
        self._stopping.set()
        with self._open_lock:
            responses = list(self._open.values())
        for response in responses:
            _abort(response)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def ready(self) -> bool:
        """True once the first full list of every kind is in the ledger."""
        return all(event.is_set() for event in self._listed.values())

    # --- one kind: list, then watch ---------------------------------------------------------------

    def _run(self, kind: Kind) -> None:
        # About 60 lines on purpose: one retry loop whose failure branches (410, API error, dropped stream,
        # a bug) share the failure count and the relist decision; split, that state would be spread out.
        failures = 0
        reason = "initial"
        while not self._stopping.is_set():
            try:
                if self._versions[kind] is None:
                    started = time.monotonic()
                    listed = self._list(kind)
                    self.metrics.list_duration.labels(kind=kind, reason=reason).observe(
                        time.monotonic() - started
                    )
                    self._versions[kind] = listed.resource_version
                    self._listed[kind].set()
                    self.metrics.relists.labels(kind=kind, reason=reason).inc()
                    logger.info(
                        "listed %d %ss at resourceVersion %s (%s)",
                        listed.items,
                        kind,
                        listed.resource_version,
                        reason,
                    )
                    failures = 0
                opened = time.monotonic()
                if self._watch(kind) or time.monotonic() - opened >= QUICK_END_SECONDS:
                    failures = 0
                    continue
                # A watch that ends at once with nothing in it is resumed, but not in a tight loop.
                failures += 1
            except (_Gone, ApiException) as exc:
                if self._stopping.is_set():
                    return
                if isinstance(exc, _Gone) or exc.status == GONE:
                    logger.info(
                        "%s watch at resourceVersion %s is gone (%s), relisting",
                        kind,
                        self._versions[kind],
                        exc,
                    )
                    self._versions[kind], reason = None, "gone"
                    continue
                failures += 1
                self.metrics.errors.labels(kind=kind).inc()
                logger.warning(
                    "%s list/watch failed (%d in a row): %s %s", kind, failures, exc.status, exc.reason
                )
            except (_WatchFailed, HTTPError, OSError, ValueError) as exc:
                if self._stopping.is_set():
                    return
                failures += 1
                self.metrics.errors.labels(kind=kind).inc()
                logger.warning("%s list/watch failed (%d in a row): %s", kind, failures, exc)
            except Exception:
                if self._stopping.is_set():
                    return
                failures += 1
                self.metrics.errors.labels(kind=kind).inc()
                logger.exception("%s list/watch failed unexpectedly (%d in a row)", kind, failures)
            if failures >= self._relist_after and self._versions[kind] is not None:
                logger.warning("%s watch failed %d times in a row, relisting", kind, failures)
                self._versions[kind], reason = None, "failures"
            if failures:
                self._sleep(
                    backoff_delay(failures, self._rand(), base=self._backoff_base, cap=self._backoff_cap)
                )

    def _call(self, kind: Kind, **kwargs: Any) -> Any:
        if kind == "Node":
            return self._core.list_node(_preload_content=False, **kwargs)
        return self._core.list_pod_for_all_namespaces(
            field_selector=SELECTORS[kind], _preload_content=False, **kwargs
        )

    def _list(self, kind: Kind) -> _ListResult:
        """List every object of ``kind`` page by page and replace that kind's state in the ledger."""
        listing = Listing(kind, self._ledger, self._profile)
        continue_token: str | None = None
        version: str | None = None
        items = 0
        while True:
            response = self._call(
                kind, limit=self._page_size, _continue=continue_token, _request_timeout=(10, 60)
            )
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            if not isinstance(page, Mapping):
                raise ValueError(f"{kind} list response is not a JSON object")
            for obj in page.get("items") or ():
                items += 1
                self._report_unreadable(kind, listing.add(obj))
            metadata = page.get("metadata") or {}
            version = resource_version(page) or version
            token = metadata.get("continue")
            del page
            if not token:
                break
            continue_token = str(token)
        if version is None:
            raise ValueError(f"{kind} list response has no metadata.resourceVersion")
        listing.apply()
        return _ListResult(version, items)

    def _watch(self, kind: Kind) -> int:
        """Watch from ``self._versions[kind]`` until the stream ends, advancing it with every event
        and bookmark (so a failure resumes from the last one seen); returns the events applied.
        Raises :class:`_Gone` on 410 and :class:`_WatchFailed` on other error events."""
        version = self._versions[kind]
        low, high = self._watch_timeout
        timeout = low + int((high - low) * self._rand()) if high > low else low
        response = self._call(
            kind,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=timeout,
            _request_timeout=(10, timeout + 30),
        )
        with self._open_lock:
            self._open[kind] = response
            if self._stopping.is_set():
                _abort(response)
        applied = 0
        ledger, profile, counters = self._ledger, self._profile, self.metrics.event_children
        try:
            for line in _lines(response):
                if self._stopping.is_set():
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                outcome = apply_event(ledger, kind, event, profile)
                if isinstance(outcome, Applied):
                    applied += 1
                    if outcome.unreadable:
                        self._report_unreadable(kind, outcome.unreadable)
                    counter = counters.get((kind, event["type"]))
                    if counter is not None:
                        counter.inc()
                    if outcome.resource_version is not None:
                        self._versions[kind] = outcome.resource_version
                    continue
                counters[(kind, "ERROR")].inc()
                if isinstance(outcome, Relist):
                    raise _Gone(outcome.reason)
                raise _WatchFailed(f"{outcome.reason} (resuming from resourceVersion {self._versions[kind]})")
        finally:
            with self._open_lock:
                self._open.pop(kind, None)
            _close(response)
        return applied

    def _report_unreadable(self, kind: Kind, description: str) -> None:
        """An object with a quantity that cannot be read: counted as no EPC, logged and counted here."""
        if description:
            self.metrics.unreadable.labels(kind=kind).inc()
            logger.warning("counted as no EPC: %s", description)

    # --- reservations ----------------------------------------------------------------------------

    def _expire_loop(self) -> None:
        interval = max(0.05, min(5.0, self._ttl / 4))
        while not self._stopping.wait(interval):
            expired = self._ledger.expire_reservations(self._clock(), self._ttl)
            if expired:
                logger.warning(
                    "dropped %d EPC reservation(s) the watch never confirmed within %ss: %s",
                    len(expired),
                    self._ttl,
                    ", ".join(expired[:10]),
                )
                if self._on_expired is not None:
                    self._on_expired(expired)


def _lines(response: Any) -> Iterator[str]:
    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
        if line:
            yield line


def _abort(response: Any) -> None:
    """Unblock a reader of a streaming response from another thread (``stop``)."""
    shutdown = getattr(response, "shutdown", None)
    try:
        if callable(shutdown):
            shutdown()
        else:  # urllib3 < 2.3
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
    except (OSError, RuntimeError, ValueError):
        pass  # closed (ValueError: urllib3's close() drops the shutdown) or released by its reader


def _close(response: Any) -> None:
    """Close a watch response and its connection (a half-read stream must not go back to the pool)."""
    response.close()
    response.release_conn()
