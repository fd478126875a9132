"""What ``confidential-pods doctor`` reads and says: the facts of a cluster, one finding per check, the
verdict and its text. Pure data and the helpers every check shares (``operate/doctor.py`` holds the checks,
``operate/schedulermode.py`` the scheduler configuration's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from confidential_pods.epc import node_capacity
from confidential_pods.profiles import PROFILES, Profile
from confidential_pods.settings import Settings
from confidential_pods.wire import mapping

#: ``skipped``: a check it depends on did not pass, so it says nothing of its own (its cause is reported).
Status = Literal["ok", "warn", "fail", "skipped"]
EXIT_CODES: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2, "skipped": 0}
#: Serving certificates that expire sooner than this are reported (the rotation renews 30 days ahead).
EXPIRY_WARNING = timedelta(days=21)
#: Names of the objects the manifests install (manifests/base).
WEBHOOK_CONFIGURATION = "confidential-pods"
WEBHOOK_DEPLOYMENT = "confidential-pods-webhook"
SCHEDULER_DEPLOYMENT = "confidential-scheduler"
ROUTE_ENTRY = "route.confidential-pods.io"
INJECTION_LABEL = "confidential-pods.io/injection"
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
#: How many names a finding lists before it says "and N more".
SHOWN = 5
#: Every profile's EPC resource: another profile's name on the nodes means a configuration to change.
EPC_RESOURCES = frozenset(p.epc_resource for p in PROFILES.values())


def is_sgx_resource(resource: str) -> bool:
    """An extended resource of an SGX device plugin (EPC, enclave, provision)."""
    return resource in EPC_RESOURCES or "sgx" in resource.lower()


@dataclass(frozen=True)
class SgxNodes:
    """The nodes' SGX resources as a profile counts them (doctor's epc-resource, precheck's sgx-nodes): the
    nodes advertising its EPC resource and their EPC in bytes, and every other SGX resource → its nodes."""

    counted: tuple[str, ...]
    total: int
    others: Mapping[str, Sequence[str]]

    @property
    def epc_like(self) -> dict[str, Sequence[str]]:
        """The other resources that are some profile's EPC (a configuration to change), by name."""
        return {r: names for r, names in sorted(self.others.items()) if r in EPC_RESOURCES}


def sgx_nodes_of(nodes: Iterable[Mapping[str, Any]], profile: Profile) -> SgxNodes:
    counted: list[str] = []
    total = 0
    others: dict[str, list[str]] = {}
    for node in nodes:
        name = str(mapping(node.get("metadata")).get("name"))
        capacity = node_capacity(node, profile, [])
        if capacity:
            counted.append(name)
            total += capacity
        for resource in mapping(mapping(node.get("status")).get("allocatable")):
            if is_sgx_resource(resource) and resource != profile.epc_resource:
                others.setdefault(resource, []).append(name)
    return SgxNodes(tuple(counted), total, others)


def counting_hint(resource: str, profile: Profile) -> str:
    """What to set so that ``resource`` is counted: the profile whose resource it is, or ``epcResource`` with
    the unit of the cluster's device plugin (which no name tells: AKS advertises Intel's name in MiB)."""
    matching = [p for p in PROFILES.values() if p.epc_resource == resource]
    keep = f"set epcResource: {resource} with the epcUnit its device plugin counts in (MiB or bytes)"
    scheduler = f"the scheduler configuration must count {resource} too"
    if matching:
        name = matching[0].name
        unit = "MiB" if matching[0].unit > 1 else "bytes"
        return (
            f"set profile: {name} in the configuration (the {name} overlay does; {unit}), or keep profile "
            f"{profile.name} and {keep}; {scheduler}"
        )
    return f"{keep}; {scheduler}"


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``message`` says why in one line, ``hint`` what to do (empty when ok);
    ``depends_on``: the checks that did not pass, when it is ``skipped``."""

    check: str
    status: Status
    message: str
    hint: str = ""
    depends_on: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
        }
        if self.depends_on:
            document["dependsOn"] = list(self.depends_on)
        return document


@dataclass(frozen=True)
class PodSummary:
    """What the checks need of a stored pod (pods are summarised as they are read: a cluster has many)."""

    namespace: str
    name: str
    node: str
    scheduler: str
    epc: int
    finished: bool

    @property
    def holds_epc(self) -> bool:
        """Assigned, not finished, and requesting EPC: it counts on its node."""
        return bool(self.node) and not self.finished and self.epc > 0


@dataclass(frozen=True)
class ClusterFacts:
    """What the doctor read. None: the object does not exist. ``unreadable``: what could not be read
    (a name of the fields below → the API server's answer), so that a check says so instead of guessing."""

    settings: Settings
    namespace: str
    now: datetime
    nodes: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[PodSummary] = ()
    namespaces: Sequence[Mapping[str, Any]] = ()
    webhook_configuration: Mapping[str, Any] | None = None
    serving_secret: Mapping[str, Any] | None = None
    deployments: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    lease: Mapping[str, Any] | None = None
    #: The KubeSchedulerConfiguration the scheduler Deployment mounts (``scheduler-config``); None when there
    #: is no such Deployment, or ``unreadable["scheduler configuration"]`` says why it could not be read.
    scheduler_configuration: Mapping[str, Any] | None = None
    daemonsets: Sequence[Mapping[str, Any]] = ()
    unreadable: Mapping[str, str] = field(default_factory=dict)


Check = Callable[[ClusterFacts], Finding]


@dataclass(frozen=True)
class Step:
    """One check as :func:`~operate.doctor.diagnose` runs it: its name, the function, and the checks whose
    failure makes its own answer meaningless (it is then ``skipped``, naming them)."""

    name: str
    run: Check
    needs: tuple[str, ...] = ()


def skipped(step: Step, blocked: Mapping[str, Status]) -> Finding:
    """``step`` not run: ``blocked`` (check → its status) did not pass."""
    names = tuple(blocked)
    why = ", ".join(f"{name} ({status})" for name, status in blocked.items())
    return Finding(step.name, "skipped", f"depends on {why}", depends_on=names)


def cannot_read(check: str, facts: ClusterFacts, *needed: str) -> Finding | None:
    missing = [f"{what}: {facts.unreadable[what]}" for what in needed if what in facts.unreadable]
    if not missing:
        return None
    return Finding(
        check,
        "fail",
        f"cannot check: {'; '.join(missing)}",
        "run with credentials that may read it (docs/operate.md lists what the doctor reads)",
    )


def judge(check: str, found: Sequence[str], problem: tuple[Status, str], hint: str, ok: str) -> Finding:
    """``problem`` (status, what) naming ``found`` when there is any, else ``ok``."""
    if not found:
        return Finding(check, "ok", ok)
    status, what = problem
    return Finding(check, status, f"{len(found)} {what}: {listed(found)}", hint)


def listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def worst(findings: Iterable[Finding]) -> Status:
    statuses = {f.status for f in findings}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


def render(findings: Sequence[Finding]) -> str:
    """One line per check (``ok``/``warn``/``fail``/``skipped``, the check, why), the hint indented below."""
    width = max(len(f.check) for f in findings) if findings else 0
    status_width = max([4, *(len(f.status) for f in findings)])
    lines = []
    for finding in findings:
        lines.append(f"{finding.status:<{status_width}}  {finding.check:<{width}}  {finding.message}")
        if finding.hint:
            lines.append(f"{'':<{status_width}}  {'':<{width}}  → {finding.hint}")
    return "\n".join(lines) + "\n"
