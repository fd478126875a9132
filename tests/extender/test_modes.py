"""``extender.modes.classify``: every KubeSchedulerConfiguration the repository ships is its mode without a
contradiction, and each contradiction is named by its sentence (tests/manifests/test_scheduler.py classifies
the kustomize builds; this reads the files themselves, chart copies included, and needs no kustomize)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidential_pods.documents import load_document
from confidential_pods.profiles import PROFILES
from extender.modes import DEFAULT_PROFILE, Mode, ModeReport, classify

REPO = Path(__file__).resolve().parents[2]
#: The chart's file of each mode, per overlay (charts/confidential-pods/files/<overlay>/).
CHART_FILES: tuple[tuple[str, Mode], ...] = (("", "native"), ("-ledger", "ledger"))
#: Every shipped scheduler configuration: its profile (the resource it must manage) and its mode.
SHIPPED: dict[str, tuple[str, Mode]] = {
    "manifests/base/scheduler-config.yaml": ("alibaba", "native"),
    "manifests/overlays/alibaba/scheduler-config.yaml": ("alibaba", "native"),
    "manifests/overlays/azure/scheduler-config.yaml": ("azure", "native"),
    "manifests/overlays/intel/scheduler-config.yaml": ("intel", "native"),
    "manifests/components/ledger-mode/alibaba/scheduler-config.yaml": ("alibaba", "ledger"),
    "manifests/components/ledger-mode/azure/scheduler-config.yaml": ("azure", "ledger"),
    "manifests/components/ledger-mode/intel/scheduler-config.yaml": ("intel", "ledger"),
    **{
        f"charts/confidential-pods/files/{overlay}/scheduler-config{suffix}.yaml": (profile, mode)
        for overlay, profile in (
            ("base", "alibaba"),
            ("alibaba", "alibaba"),
            ("azure", "azure"),
            ("intel", "intel"),
        )
        for suffix, mode in CHART_FILES
    },
}


def read(path: str) -> dict[str, Any]:
    document: dict[str, Any] = load_document((REPO / path).read_text(), path)
    return document


def test_the_table_lists_every_shipped_configuration() -> None:
    found = {
        str(p.relative_to(REPO))
        for pattern in ("manifests/**/scheduler-config*.yaml", "charts/*/files/*/scheduler-config*.yaml")
        for p in REPO.glob(pattern)
    }
    assert found == set(SHIPPED)


@pytest.mark.parametrize(("path", "profile", "mode"), [(p, *v) for p, v in SHIPPED.items()])
def test_every_shipped_configuration_is_its_mode_without_contradiction(
    path: str, profile: str, mode: Mode
) -> None:
    # the profile of the table is the one of the configuration shipped beside it (ledger-mode: its directory)
    beside = (REPO / path).parent / "config.yaml"
    if beside.exists():
        assert read(str(beside.relative_to(REPO)))["profile"] == profile
    else:
        assert (REPO / path).parent.name == profile
    report = classify(read(path), PROFILES[profile].epc_resource)
    assert report == ModeReport(mode, ("confidential-scheduler",), ())


def test_a_configuration_for_another_resource_has_no_mode() -> None:
    report = classify(read("manifests/overlays/alibaba/scheduler-config.yaml"), "sgx.intel.com/epc")
    assert report.mode is None
    assert report.problems == ("no extender manages sgx.intel.com/epc: the extender is never asked",)


EPC = "sgx.intel.com/epc"
NATIVE = read("manifests/overlays/intel/scheduler-config.yaml")
LEDGER = read("manifests/components/ledger-mode/intel/scheduler-config.yaml")


def fit_args(config: dict[str, Any], profile: int = 0) -> dict[str, Any]:
    """NodeResourcesFit's args of a profile (added when the profile configures none)."""
    plugins = config["profiles"][profile].setdefault("pluginConfig", [])
    found = [p for p in plugins if p["name"] == "NodeResourcesFit"]
    if not found:
        plugins.append({"name": "NodeResourcesFit", "args": {}})
        found = plugins[-1:]
    args: dict[str, Any] = found[0].setdefault("args", {})
    return args


def extender(config: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = config["extenders"][0]
    return first


def two_profiles(config: dict[str, Any]) -> None:
    config["profiles"].append({**copy.deepcopy(config["profiles"][0]), "schedulerName": "second"})


NO_EXTENDER = "no extender manages sgx.intel.com/epc: the extender is never asked"
NO_FILTER = "the extender has no filterVerb: its refusals are never asked for"
NO_PREEMPT = "the extender has no preemptVerb: preemption may evict pods for a node the pod cannot use"
IGNORABLE = "the extender is ignorable: while it is down pods are placed without its checks"
NO_PRIORITIZE = "ledger mode without prioritizeVerb: nodes are not scored by the ledger's free EPC"
BLIND = (
    "profile {}: NodeResourcesFit ignores sgx.intel.com/epc and nothing else counts it "
    "(native mode binds without the ledger): pods could be bound into EPC in use"
)
UNCOUNTED = (
    "no profile counts sgx.intel.com/epc in NodeResourcesFit: "
    "preemption's dry run cannot find victims that free EPC"
)
Change = Callable[[dict[str, Any]], object]
FIT = "NodeResourcesFit"


def managed(config: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = extender(config)["managedResources"][0]
    return entry


def ignore_epc(profile: int = 0) -> Change:
    return lambda c: fit_args(c, profile).update(ignoredResources=[EPC])


def blind_second_profile(config: dict[str, Any]) -> None:
    two_profiles(config)
    fit_args(config, 1).update(ignoredResources=[EPC])


def unfiltered_and_ignorable(config: dict[str, Any]) -> None:
    extender(config).pop("filterVerb")
    extender(config).update(ignorable=True)


CONTRADICTIONS: dict[str, tuple[dict[str, Any], Change, Mode | None, list[str]]] = {
    "no-extender": (NATIVE, lambda c: c.pop("extenders"), None, [NO_EXTENDER]),
    "extender-for-another-resource": (
        NATIVE, lambda c: extender(c).update(managedResources=[{"name": "other.io/epc"}]), None, [NO_EXTENDER]
    ),
    "two-extenders": (
        NATIVE, lambda c: c["extenders"].append(copy.deepcopy(extender(c))), None,
        ["2 extenders manage sgx.intel.com/epc: expected one"],
    ),
    "no-managed-resources-manages-all": (NATIVE, lambda c: extender(c).pop("managedResources"), "native", []),
    "no-filter": (NATIVE, lambda c: extender(c).pop("filterVerb"), "native", [NO_FILTER]),
    "no-preempt": (NATIVE, lambda c: extender(c).pop("preemptVerb"), "native", [NO_PREEMPT]),
    "ignorable": (NATIVE, lambda c: extender(c).update(ignorable=True), "native", [IGNORABLE]),
    "ledger-without-prioritize": (
        LEDGER, lambda c: extender(c).pop("prioritizeVerb"), "ledger", [NO_PRIORITIZE]
    ),
    "bind-verb-makes-ledger": (
        NATIVE, lambda c: extender(c).update(bindVerb="bind", prioritizeVerb="prioritize"), "ledger", []
    ),
    "native-ignored-resource": (NATIVE, ignore_epc(), "native", [BLIND.format("confidential-scheduler")]),
    "native-ignored-group": (
        NATIVE, lambda c: fit_args(c).update(ignoredResourceGroups=["sgx.intel.com"]), "native",
        [BLIND.format("confidential-scheduler")],
    ),
    "native-ignored-by-scheduler": (
        NATIVE, lambda c: managed(c).update(ignoredByScheduler=True), "native",
        [BLIND.format("confidential-scheduler")],
    ),
    "native-one-profile-of-two-blind": (NATIVE, blind_second_profile, "native", [BLIND.format("second")]),
    "native-fit-filter-disabled": (
        NATIVE, lambda c: c["profiles"][0].update(plugins={"filter": {"disabled": [{"name": FIT}]}}),
        "native", [BLIND.format("confidential-scheduler")],
    ),
    "native-every-multipoint-plugin-disabled": (
        NATIVE, lambda c: c["profiles"][0].update(plugins={"multiPoint": {"disabled": [{"name": "*"}]}}),
        "native", [BLIND.format("confidential-scheduler")],
    ),
    "native-another-plugin-disabled": (
        NATIVE, lambda c: c["profiles"][0].update(plugins={"filter": {"disabled": [{"name": "NodePorts"}]}}),
        "native", [],
    ),
    "ledger-no-profile-counts": (LEDGER, ignore_epc(), "ledger", [UNCOUNTED]),
    "ledger-one-profile-of-two-counts": (LEDGER, blind_second_profile, "ledger", []),
    "ledger-ignored-by-scheduler": (
        LEDGER, lambda c: managed(c).update(ignoredByScheduler=True), "ledger", [UNCOUNTED]
    ),
    "every-contradiction-is-listed": (NATIVE, unfiltered_and_ignorable, "native", [NO_FILTER, IGNORABLE]),
}  # fmt: skip


@pytest.mark.parametrize(
    ("base", "change", "mode", "problems"),
    [pytest.param(*case, id=name) for name, case in CONTRADICTIONS.items()],
)
def test_each_contradiction_is_named(
    base: dict[str, Any], change: Change, mode: Mode | None, problems: list[str]
) -> None:
    config = copy.deepcopy(base)
    change(config)
    report = classify(config, EPC)
    assert (report.mode, list(report.problems)) == (mode, problems)


@pytest.mark.parametrize(
    ("profiles", "names"),
    [
        pytest.param(None, (DEFAULT_PROFILE,), id="no-profiles-is-the-default-one"),
        pytest.param([{}], (DEFAULT_PROFILE,), id="unnamed-profile"),
        pytest.param([{"schedulerName": "a"}, {"schedulerName": "b"}], ("a", "b"), id="named-profiles"),
    ],
)
def test_profile_names(profiles: list[dict[str, Any]] | None, names: tuple[str, ...]) -> None:
    config = copy.deepcopy(NATIVE)
    config.pop("profiles")
    if profiles is not None:
        config["profiles"] = profiles
    assert classify(config, EPC).profiles == names
    assert classify({"profiles": profiles} if profiles else {}, EPC).profiles == names  # with no extender too
