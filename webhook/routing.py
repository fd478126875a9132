"""Which scheduler places a pod that needs EPC, and ``/route``: EPC pods that skip the opt-in.

:func:`scheduler_for` is the one rule for both: ``preemptingSchedulerName`` for a pod that may preempt,
else ``schedulerName``. :func:`route` is the whole of what the third webhook entry does (config
``routeEPCPods``, component ``manifests/components/route-epc-pods``): a pod that requests the profile's
EPC resource but did not opt in gets that scheduler — nothing else is injected — so that every EPC pod is
placed by the scheduler whose extender counts binds in flight. It never refuses a pod: the entry exists to
route, and a pod it cannot read is left to the API server's own validation. No IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confidential_pods.epc import effective_epc
from confidential_pods.settings import Settings
from webhook.contract import CONFIDENTIAL, STATUS
from webhook.mutation import Mutation
from webhook.patching import PatchBuilder
from webhook.podview import PodRefused, read_pod

#: What ``spec.schedulerName`` may be for the webhook to set it: the pod did not choose a scheduler.
DEFAULT_SCHEDULERS = (None, "", "default-scheduler")


def scheduler_for(spec: Mapping[str, Any], settings: Settings) -> str | None:
    """``preemptingSchedulerName`` for a pod that may preempt, else ``schedulerName``.

    The Priority admission plugin has already resolved ``spec.priority`` from the PriorityClass when
    mutating webhooks run (kube-apiserver's plugin order), so the webhook can route by it.
    """
    priority = spec.get("priority")
    may_preempt = (
        isinstance(priority, int)
        and not isinstance(priority, bool)
        and priority > 0
        and spec.get("preemptionPolicy") != "Never"
    )
    if may_preempt and settings.preempting_scheduler_name:
        return settings.preempting_scheduler_name
    return settings.scheduler_name


def route(pod: Mapping[str, Any], *, settings: Settings) -> Mutation:
    """``/route``: the scheduler for a pod that requests EPC without opting in; never a denial."""
    if not settings.route_epc_pods:
        return Mutation("skipped", message="routeEPCPods is off in the configuration")
    try:
        view = read_pod(pod)
    except PodRefused as exc:
        return Mutation("unchanged", message=f"not routed: {exc}")
    if STATUS in view.annotations or view.annotations.get(CONFIDENTIAL) == "true":
        return Mutation("skipped", message="opted in: the other entries inject it")
    resource = settings.profile.epc_resource
    if effective_epc(pod, settings.profile, []) <= 0:
        return Mutation("skipped", message=f"requests no {resource}")
    scheduler = scheduler_for(view.spec, settings)
    current = view.spec.get("schedulerName")
    if not scheduler or current == scheduler:
        return Mutation("unchanged", message="no scheduler to set")
    if current not in DEFAULT_SCHEDULERS:
        return Mutation("unchanged", message=f"the pod chose its scheduler ({current})")
    builder = PatchBuilder(pod)
    builder.set_key(["spec"], "schedulerName", scheduler)
    warning = (
        f"confidential-pods: this pod requests {resource} without opting in; it is scheduled by {scheduler}, "
        'which counts the EPC in use (annotate confidential-pods.io/confidential: "true" for the rest: '
        "AESM, RuntimeClass, attestation)"
    )
    return Mutation("mutated", patch=tuple(builder.operations), warnings=(warning,))
