"""The extender's verbs: parsed arguments and the ledger in, an answer and an outcome out.

One method per verb on :class:`Verbs`, which holds what every verb works on (the ledger, the binder,
the settings, the EPC of pods seen by filter for the bind that follows). No flask and no HTTP: the
HTTP app (``app.py``) and ``simulate`` call the same methods with the same parsed arguments
(``wire.Candidates``, ``wire.BindRequest``), so what ``simulate`` shows is what kube-scheduler gets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from confidential_pods.epc import effective_epc
from confidential_pods.settings import Settings
from extender.binding import Binder, Departures, PendingPods, bind_pod, pod_for_bind
from extender.ledger import EpcLedger
from extender.podepc import nominated_node, pod_priority, pod_uid
from extender.preemption import Preemptor, Refined, refine
from extender.readiness import pod_quotes, refusal
from extender.scheduling import NamesFilterOutcome, filter_names, held_view, score_names
from extender.wire import (
    BindRequest,
    Candidates,
    PreemptionRequest,
    PrioritizeWriter,
    error_filter_result,
    filter_result_in_order,
    preemption_result,
)

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "refused", "malformed"]
VerbName = Literal["filter", "prioritize", "bind", "preempt"]

#: At most this many pods on their way out are asked about per filter call (:meth:`Verbs._victims_gone`).
MAX_DEPARTURES_ASKED = 8

NOT_READY = "confidential-pods extender is not ready: the EPC ledger has not listed nodes and pods yet"


@dataclass(frozen=True, slots=True)
class Answer:
    """A verb's answer: the JSON body (or its text, already encoded), the outcome for the metrics."""

    body: Any
    outcome: Outcome = "ok"
    status: int = 200


class Verbs:
    """filter, prioritize and bind over one ledger (thread-safe: the ledger has the only lock)."""

    def __init__(
        self,
        ledger: EpcLedger,
        settings: Settings,
        binder: Binder,
        *,
        pending: PendingPods | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_expired: Callable[[list[str]], object] = lambda uids: None,
        on_preempt: Callable[[Refined], object] = lambda refined: None,
        on_departures: Callable[[int, Departures], object] = lambda asked, departures: None,
        counts_epc: bool = True,
        wall_clock: Callable[[], float | None] = time.time,
    ) -> None:
        self.ledger = ledger
        #: Seconds since the epoch, to judge a node condition's lastHeartbeatTime (``clock`` is monotonic);
        #: None: conditions never go stale (a snapshot, judged as it was taken).
        self.wall_clock = wall_clock
        #: Whether /filter refuses nodes by the ledger's free EPC. False in native mode (extender/modes.py),
        #: where kube-scheduler's NodeResourcesFit counts EPC with its own binds in flight and nominated pods:
        #: a second count from a watch a few milliseconds behind could only refuse a pod that fits (after a
        #: delete), leaving it unschedulable until the next cluster event.
        self.counts_epc = counts_epc
        self.settings = settings
        self.binder = binder
        self.pending = pending if pending is not None else PendingPods()
        self.clock = clock
        self.on_expired = on_expired
        self.on_preempt = on_preempt
        self.on_departures = on_departures
        self._writer = PrioritizeWriter()

    # --- the verbs ----------------------------------------------------------------------------------

    def filter(self, candidates: Candidates) -> Answer:
        """Keep the nodes with enough free EPC (unless kube-scheduler counts it: :attr:`counts_epc`) and, for
        a pod that quotes, attestation-ready; say why for the others (``ExtenderFilterResult``)."""
        epc, priority, unreadable = self._pod_epc(candidates)
        if unreadable:
            reason = f"pod's SGX EPC request cannot be read: {unreadable}"
            answer = filter_result_in_order(candidates, (), {}, dict.fromkeys(candidates.names, reason))
            return Answer(answer, "refused")
        names = candidates.names
        if epc > 0 and self.counts_epc:
            self.expire()
            resource = self.settings.profile.epc_resource
            uid = pod_uid(candidates.pod)
            holds = self.ledger.holds(uid, priority)

            def judge() -> NamesFilterOutcome:  # one lock acquisition, one consistent view, one loop
                return self.ledger.with_usages(
                    lambda usages: filter_names(epc, names, held_view(usages, holds), resource)
                )

            outcome = judge()
            nominated = nominated_node(candidates.pod) or self.ledger.nominated_node(uid)
            if nominated in outcome.failed and self._victims_gone(nominated, epc, holds.get(nominated, 0)):
                outcome = judge()
        else:
            outcome = filter_names(0, names, {}, "")
        if epc > 0 and outcome.passed and pod_quotes(candidates.pod):
            outcome = self._ready_only(outcome)
        return Answer(
            filter_result_in_order(candidates, outcome.passed, outcome.failed, outcome.unresolvable)
        )

    def _ready_only(self, outcome: NamesFilterOutcome) -> NamesFilterOutcome:
        """The outcome with the passing nodes that are not attestation-ready refused, as unresolvable: no
        eviction makes them usable, so preemption does not consider them (extender/readiness.py)."""
        unknown, now = self.settings.attestation_unknown, self.wall_clock()
        readiness = self.ledger.readiness_of(outcome.passed)
        refused = {
            name: why
            for name in outcome.passed
            if (why := refusal(name, readiness[name], unknown, now)) is not None
        }
        if not refused:
            return outcome
        passed = tuple(name for name in outcome.passed if name not in refused)
        return NamesFilterOutcome(passed, dict(outcome.failed), {**outcome.unresolvable, **refused})

    def prioritize(self, candidates: Candidates) -> Answer:
        """Score each node 0..10 by the configured strategy (``[HostPriority]``, as JSON text)."""
        epc, priority, unreadable = self._pod_epc(candidates)
        names = candidates.names
        strategy = self.settings.scoring_strategy
        if epc > 0 and not unreadable:
            holds = self.ledger.holds(pod_uid(candidates.pod), priority)
            scores = self.ledger.with_usages(
                lambda usages: score_names(epc, names, held_view(usages, holds), strategy)
            )
        else:
            scores = score_names(0, names, {}, strategy)
        return Answer(self._writer.write(names, scores))

    def bind(self, request: BindRequest) -> Answer:
        """Re-check the fit, reserve, create the Binding (``ExtenderBindingResult``)."""
        found = pod_for_bind(request, self.pending, self.binder, self.settings.profile)
        if isinstance(found, str):
            error = found
        else:
            self.expire()
            # The ledger lock covers the fit check and the reservation only, not the API call:
            # filter and prioritize for the next pods must not wait for this pod's round trip.
            epc, priority = found
            error = bind_pod(
                request,
                epc,
                ledger=self.ledger,
                binder=self.binder,
                profile=self.settings.profile,
                now=self.clock(),
                priority=priority,
            ).error
        who = f"{request.pod_namespace}/{request.pod_name}"
        if error:
            logger.info("refused to bind %s to %s: %s", who, request.node, error)
        else:
            logger.debug("bound %s to %s", who, request.node)
        return Answer({"Error": error}, "refused" if error else "ok")

    def preempt(self, request: PreemptionRequest) -> Answer:
        """Keep the candidate nodes where evicting frees enough EPC, adding lower-priority victims the
        ledger knows when the scheduler's are not enough (``ExtenderPreemptionResult``; preemption.py)."""
        unreadable: list[str] = []
        epc = effective_epc(request.pod, self.settings.profile, unreadable)
        if unreadable:  # the filter refused it on every node: nothing to free
            return Answer(preemption_result({}), "refused")
        preemptor = Preemptor(uid=pod_uid(request.pod), epc=epc, priority=pod_priority(request.pod))
        with self.ledger.lock:
            nodes = {name: self.ledger.node(name) for name in request.candidates}
        unready: dict[str, str] = {}
        if epc > 0 and pod_quotes(request.pod):  # no eviction for a node the preemptor could not use
            readiness = self.ledger.readiness_of(request.candidates)
            unknown, now = self.settings.attestation_unknown, self.wall_clock()
            unready = {
                name: why
                for name in request.candidates
                if (why := refusal(name, readiness[name], unknown, now)) is not None
            }
        usable = {name: victims for name, victims in request.candidates.items() if name not in unready}
        refined = refine(preemptor, usable, nodes)
        if unready:
            refined = replace(refined, dropped={**unready, **refined.dropped})
        self.on_preempt(refined)
        if refined.dropped:
            logger.info("preemption for %s: dropped %s", preemptor.uid, refined.dropped)
        return Answer(preemption_result(refined.kept))

    @staticmethod
    def not_ready(verb: VerbName) -> Answer:
        """What each verb answers before the ledger's first full list."""
        if verb == "filter":  # kube-scheduler fails this scheduling attempt and retries
            return Answer(error_filter_result(NOT_READY), "refused")
        if verb in ("prioritize", "preempt"):  # kube-scheduler ignores a failing call to these
            return Answer({"Error": NOT_READY}, "refused", 503)
        return Answer({"Error": NOT_READY}, "refused")

    # --- shared steps -------------------------------------------------------------------------------

    def expire(self) -> None:
        """Drop reservations the watch never confirmed within ``reservationTTLSeconds``."""
        expired = self.ledger.expire_reservations(self.clock(), self.settings.reservation_ttl_seconds)
        if expired:
            logger.warning(
                "dropped %d reservation(s) the watch never confirmed: %s", len(expired), expired[:10]
            )
            self.on_expired(expired)

    def _victims_gone(self, node: str, epc: int, held: int) -> bool:
        """Whether the API server has already deleted pods that the ledger still counts on ``node``,
        the node preemption nominated this pod to, and that keep it from fitting there.

        kube-scheduler retries the pod as soon as its own watch shows the last victim deleted, which can
        be before the extender's watch shows it. Refused then, the pod would preempt again, elsewhere:
        one eviction too many. So when the pods on their way out there (``PodEpc.leaving``) are what
        stands between the pod and the node, the API server is asked about them (a GET each, only
        then), and those it no longer has are forgotten at once (:meth:`EpcLedger.confirm_deleted`).
        """
        leaving = self.ledger.leaving_on(node)
        usage = self.ledger.usage(node)
        if not leaving or usage is None or usage.free is None:
            return False
        if usage.free - held + sum(p.epc for p in leaving) < epc:  # even their going would not be enough
            return False
        asked = leaving[:MAX_DEPARTURES_ASKED]
        departures = self.binder.deleted(asked)
        self.on_departures(len(asked), departures)
        if departures.error:
            logger.warning(
                "cannot tell whether %d pod(s) on %s are deleted yet: %s",
                len(asked) - departures.answered,
                node,
                departures.error,
            )
        if departures.deleted:
            logger.info("the API server has already deleted %s on %s", list(departures.deleted), node)
            self.ledger.confirm_deleted(departures.deleted)
        return bool(departures.deleted)

    def _pod_epc(self, candidates: Candidates) -> tuple[int, int, str]:
        """The pod's effective EPC and priority, remembered for its bind; and the first unreadable
        quantity, if any."""
        unreadable: list[str] = []
        epc = effective_epc(candidates.pod, self.settings.profile, unreadable)
        priority = pod_priority(candidates.pod)
        if unreadable:
            return 0, priority, unreadable[0]
        self.pending.remember(pod_uid(candidates.pod), epc, priority)
        return epc, priority, ""
