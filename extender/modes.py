"""Which scheduling mode a KubeSchedulerConfiguration runs, and what in it contradicts that mode (pure).

Two modes (docs/extender.md "Modes"):

- **native** (the default of every overlay and the chart): kube-scheduler counts the profile's EPC resource
  in NodeResourcesFit in every profile, scores it in-tree and binds; the extender answers ``filter`` (what
  only it knows) and ``preempt``. No ``bindVerb``.
- **ledger**: the extender also scores (``prioritizeVerb``) and binds (``bindVerb``), holding a reservation
  for each bind until its watch shows the pod: for clusters where another scheduler also places EPC pods.

The mode is what the configuration does, so it is read from the configuration (the extender's ``bindVerb``)
rather than from a key that could disagree with it. :func:`classify` names it and lists every contradiction,
each a sentence saying what breaks: the extender reads it at start-up (``--scheduler-config``), ``doctor``
and the manifests' tests call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from confidential_pods.wire import mapping

Mode = Literal["native", "ledger"]
MODES: tuple[Mode, ...] = ("native", "ledger")
#: The default profile name of a KubeSchedulerConfiguration profile without ``schedulerName``.
DEFAULT_PROFILE = "default-scheduler"


@dataclass(frozen=True)
class ModeReport:
    """The mode of a configuration (None: no extender manages the EPC resource), its profiles' scheduler
    names, and what contradicts the mode."""

    mode: Mode | None
    profiles: tuple[str, ...]
    problems: tuple[str, ...]


def classify(config: Mapping[str, Any], resource: str) -> ModeReport:
    """The mode of ``config`` for pods requesting ``resource``, and its contradictions."""
    profiles = [mapping(p) for p in _items(config.get("profiles"))] or [{}]
    names = tuple(str(p.get("schedulerName") or DEFAULT_PROFILE) for p in profiles)
    extenders = [e for e in (mapping(x) for x in _items(config.get("extenders"))) if _manages(e, resource)]
    if not extenders:
        return ModeReport(None, names, (f"no extender manages {resource}: the extender is never asked",))
    if len(extenders) > 1:
        return ModeReport(None, names, (f"{len(extenders)} extenders manage {resource}: expected one",))
    (extender,) = extenders
    mode: Mode = "ledger" if extender.get("bindVerb") else "native"
    problems: list[str] = []
    if not extender.get("filterVerb"):
        problems.append("the extender has no filterVerb: its refusals are never asked for")
    if not extender.get("preemptVerb"):
        problems.append(
            "the extender has no preemptVerb: preemption may evict pods for a node the pod cannot use"
        )
    if extender.get("ignorable") is True:
        problems.append("the extender is ignorable: while it is down pods are placed without its checks")
    if mode == "ledger" and not extender.get("prioritizeVerb"):
        problems.append("ledger mode without prioritizeVerb: nodes are not scored by the ledger's free EPC")
    blind = _blind_profiles(profiles, names, extender, resource)
    if mode == "native":
        problems.extend(
            f"profile {name}: NodeResourcesFit ignores {resource} and nothing else counts it (native mode "
            "binds without the ledger): pods could be bound into EPC in use"
            for name in blind
        )
    elif len(blind) == len(names):
        problems.append(
            f"no profile counts {resource} in NodeResourcesFit: preemption's dry run cannot find victims "
            "that free EPC"
        )
    return ModeReport(mode, names, tuple(problems))


def filter_counts_epc(report: ModeReport | None) -> bool:
    """Whether the extender's ``/filter`` must count free EPC itself: not in a native configuration without
    contradictions (kube-scheduler counts it, more up to date than a watch); in every other case, and
    without a configuration to read (``None``), it does, as the safe side."""
    return not (report is not None and report.mode == "native" and not report.problems)


def describe(report: ModeReport) -> str:
    """One line for the extender's start-up log and ``doctor``."""
    if report.mode == "native":
        return (
            "native mode: kube-scheduler counts, scores and binds EPC pods; the extender filters and "
            "checks preemption"
        )
    if report.mode == "ledger":
        return (
            "ledger mode: the extender filters by its ledger, scores, binds with reservations and "
            "checks preemption"
        )
    return "no scheduling mode: " + "; ".join(report.problems)


def _manages(extender: Mapping[str, Any], resource: str) -> bool:
    managed = [mapping(m) for m in _items(extender.get("managedResources"))]
    return not managed or any(m.get("name") == resource for m in managed)


def _blind_profiles(
    profiles: Sequence[Mapping[str, Any]], names: Sequence[str], extender: Mapping[str, Any], resource: str
) -> list[str]:
    """The profiles whose NodeResourcesFit does not count ``resource`` (``ignoredResources``, an ignored
    group, its filter disabled, or the extender's ``ignoredByScheduler``, which applies to every profile)."""
    ignored_everywhere = any(
        mapping(m).get("name") == resource and mapping(m).get("ignoredByScheduler") is True
        for m in _items(extender.get("managedResources"))
    )
    group = resource.split("/", 1)[0]
    blind = []
    for profile, name in zip(profiles, names, strict=True):
        args: Mapping[str, Any] = {}
        for plugin in _items(profile.get("pluginConfig")):
            if mapping(plugin).get("name") == "NodeResourcesFit":
                args = mapping(mapping(plugin).get("args"))
        if (
            ignored_everywhere
            or resource in _items(args.get("ignoredResources"))
            or group in _items(args.get("ignoredResourceGroups"))
            or _fit_disabled(mapping(profile.get("plugins")))
        ):
            blind.append(name)
    return blind


def _fit_disabled(plugins: Mapping[str, Any]) -> bool:
    """Whether a profile's ``plugins`` turn NodeResourcesFit's filter off (``filter`` or ``multiPoint``,
    by name or ``*``)."""
    for point in ("filter", "multiPoint"):
        for plugin in _items(mapping(plugins.get(point)).get("disabled")):
            if mapping(plugin).get("name") in ("NodeResourcesFit", "*"):
                return True
    return False


def _items(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else []
