"""The doctor's ``scheduler-mode`` check: the KubeSchedulerConfiguration ``confidential-scheduler`` runs with
is one of the two modes (:mod:`extender.modes`, docs/extender.md "Modes") without contradictions, and it runs
the profiles the webhook sends opted-in pods to.

Pure, as every check: it reads :class:`~operate.facts.ClusterFacts` (``operate/cluster.py`` reads the
ConfigMap the Deployment mounts as ``scheduler-config``). Its own module because ``operate/doctor.py`` is
already long; :data:`operate.doctor.CHECKS` runs it.
"""

from __future__ import annotations

from extender.modes import DEFAULT_PROFILE, Mode, ModeReport, classify
from operate.facts import SCHEDULER_DEPLOYMENT, ClusterFacts, Finding, cannot_read

CHECK = "scheduler-mode"
#: The key of :attr:`ClusterFacts.unreadable` for the configuration (``operate/cluster.py`` writes it).
UNREADABLE = "scheduler configuration"
#: What each mode does, for the ``ok`` line.
SAYS: dict[Mode, str] = {
    "native": "native mode: kube-scheduler counts and binds EPC pods; "
    "the extender filters and checks preemption",
    "ledger": "ledger mode: the extender filters, scores and binds EPC pods "
    "(holding each bind's EPC until its watch shows the pod) and checks preemption",
}
MODE_HINT = 'use the overlay\'s scheduler-config.yaml or components/ledger-mode (docs/extender.md "Modes")'


def scheduler_mode(facts: ClusterFacts) -> Finding:
    """The scheduler configuration's mode, or what contradicts it, and the webhook's scheduler names among its
    profiles."""
    if (problem := cannot_read(CHECK, facts, f"deployment {SCHEDULER_DEPLOYMENT}")) is not None:
        return problem
    if facts.deployments.get(SCHEDULER_DEPLOYMENT) is None:
        return Finding(
            CHECK,
            "ok",
            f"no {SCHEDULER_DEPLOYMENT} Deployment: the cluster's own scheduler places EPC pods, "
            "with a configuration the doctor does not read",
        )
    config = facts.scheduler_configuration
    if config is None:
        why = facts.unreadable.get(UNREADABLE, "not read")
        return Finding(
            CHECK,
            "fail",
            f"cannot check the scheduler configuration: {why}",
            f"the Deployment mounts the ConfigMap of the overlay's scheduler-config.yaml as scheduler-config "
            f"(kubectl -n {facts.namespace} get deploy/{SCHEDULER_DEPLOYMENT} -o yaml); a refused read needs "
            "credentials that may read configmaps (docs/operate.md)",
        )
    resource = facts.settings.profile.epc_resource
    report = classify(config, resource)
    faults = list(report.problems)
    hints = [MODE_HINT] if faults else []
    unserved = _unserved(facts, report)
    if unserved:
        names = " and ".join(f"{key} {name}" for key, name in unserved)
        faults.append(
            f"{names} not among the configuration's profiles ({', '.join(report.profiles)}): "
            "opted-in pods would wait for a scheduler nobody runs"
        )
        keys = " and ".join(key for key, _ in unserved)
        hints.append(f"set {keys} in the webhook's configuration to a profile of the scheduler configuration")
    if report.mode is None or faults:
        mode = f"{report.mode} mode" if report.mode else f"no mode for {resource}"
        return Finding(CHECK, "fail", f"{mode}: {'; '.join(faults)}", "; ".join(hints))
    if facts.settings.scheduler_name is None and DEFAULT_PROFILE not in report.profiles:
        return Finding(
            CHECK,
            "warn",
            f"{SAYS[report.mode]}, but schedulerName is not set: opted-in pods go to {DEFAULT_PROFILE}, "
            f"which this Deployment does not run (profiles {', '.join(report.profiles)})",
            f"set schedulerName: {report.profiles[0]} in the webhook's configuration, or remove the "
            f"{SCHEDULER_DEPLOYMENT} Deployment if the cluster's scheduler runs the extender",
        )
    return Finding(CHECK, "ok", f"{SAYS[report.mode]} (profiles {', '.join(report.profiles)})")


def _unserved(facts: ClusterFacts, report: ModeReport) -> list[tuple[str, str]]:
    """The webhook's scheduler names that no profile runs: (key, name), the key ``schedulerName`` or
    ``preemptingSchedulerName``."""
    named = {
        "schedulerName": facts.settings.scheduler_name,
        "preemptingSchedulerName": facts.settings.preempting_scheduler_name,
    }
    return [(key, name) for key, name in named.items() if name and name not in report.profiles]
