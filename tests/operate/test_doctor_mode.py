"""The doctor's ``scheduler-mode`` check on seeded facts: the shipped configurations of both modes pass, each
contradiction and each scheduler name nobody runs fails, naming it; a missing Deployment is no fault of its
own, an unreadable configuration says why. The configurations are the files manifests/ ships, as their
ConfigMaps hold them (tests/operate/test_cluster.py reads them through the cluster reader)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from confidential_pods.settings import settings_from_mapping
from operate.doctor import CHECKS, ClusterFacts, diagnose
from operate.schedulermode import MODE_HINT, scheduler_mode
from tests.operate.test_doctor import NATIVE, deployment, healthy, shipped_scheduler_configuration

LEDGER = shipped_scheduler_configuration("manifests/components/ledger-mode/alibaba/scheduler-config.yaml")
INTEL_NATIVE = shipped_scheduler_configuration("manifests/overlays/intel/scheduler-config.yaml")
EPC = "alibabacloud.com/sgx_epc_MiB"
NATIVE_OK = (
    "native mode: kube-scheduler counts and binds EPC pods; the extender filters and checks preemption"
)
BLIND = (
    f"profile confidential-scheduler: NodeResourcesFit ignores {EPC} and nothing else counts it "
    "(native mode binds without the ledger): pods could be bound into EPC in use"
)
NAME_HINT = "set {} in the webhook's configuration to a profile of the scheduler configuration"
UNREAD_HINT = (
    "the Deployment mounts the ConfigMap of the overlay's scheduler-config.yaml as scheduler-config "
    "(kubectl -n confidential-pods get deploy/confidential-scheduler -o yaml); a refused read needs "
    "credentials that may read configmaps (docs/operate.md)"
)
MISSING = (
    "ConfigMap confidential-pods/confidential-scheduler-config-x "
    "(Deployment confidential-pods/confidential-scheduler mounts it) does not exist"
)


def changed(config: dict[str, Any], change: Any) -> dict[str, Any]:
    """A deep copy of ``config`` after ``change(copy)``."""
    copied = copy.deepcopy(config)
    change(copied)
    return copied


def ignoring_epc(config: dict[str, Any]) -> None:
    (fit,) = [p for p in config["profiles"][0]["pluginConfig"] if p["name"] == "NodeResourcesFit"]
    fit["args"]["ignoredResources"] = [EPC]


def second_profile(config: dict[str, Any]) -> None:
    config["profiles"].append(
        {**copy.deepcopy(config["profiles"][0]), "schedulerName": "confidential-preempting"}
    )


def settings(**keys: Any) -> Any:
    return settings_from_mapping({"aesm": "host", **keys})


@pytest.mark.parametrize(
    ("facts", "status", "message", "hint"),
    [
        pytest.param(
            healthy(),
            "ok",
            f"{NATIVE_OK} (profiles confidential-scheduler)",
            "",
            id="native-shipped",
        ),
        pytest.param(
            healthy(scheduler_configuration=LEDGER),
            "ok",
            "ledger mode: the extender filters, scores and binds EPC pods (holding each bind's EPC until its "
            "watch shows the pod) and checks preemption (profiles confidential-scheduler)",
            "",
            id="ledger-component",
        ),
        pytest.param(
            healthy(scheduler_configuration=changed(NATIVE, ignoring_epc)),
            "fail",
            f"native mode: {BLIND}",
            MODE_HINT,
            id="native-ignoring-epc",
        ),
        pytest.param(
            healthy(scheduler_configuration=changed(NATIVE, lambda c: c.pop("extenders"))),
            "fail",
            f"no mode for {EPC}: no extender manages {EPC}: the extender is never asked",
            MODE_HINT,
            id="no-extender",
        ),
        pytest.param(
            healthy(scheduler_configuration=changed(LEDGER, lambda c: c["extenders"][0].pop("preemptVerb"))),
            "fail",
            "ledger mode: the extender has no preemptVerb: "
            "preemption may evict pods for a node the pod cannot use",
            MODE_HINT,
            id="ledger-without-preempt",
        ),
        pytest.param(
            healthy(settings=settings(schedulerName="sgx-scheduler")),
            "fail",
            "native mode: schedulerName sgx-scheduler not among the configuration's profiles "
            "(confidential-scheduler): opted-in pods would wait for a scheduler nobody runs",
            NAME_HINT.format("schedulerName"),
            id="scheduler-name-not-a-profile",
        ),
        pytest.param(
            healthy(
                settings=settings(
                    schedulerName="confidential-scheduler", preemptingSchedulerName="confidential-preempting"
                )
            ),
            "fail",
            "native mode: preemptingSchedulerName confidential-preempting not among the configuration's "
            "profiles (confidential-scheduler): opted-in pods would wait for a scheduler nobody runs",
            NAME_HINT.format("preemptingSchedulerName"),
            id="preempting-scheduler-name-not-a-profile",
        ),
        pytest.param(
            healthy(settings=settings(schedulerName="sgx-a", preemptingSchedulerName="sgx-b")),
            "fail",
            "native mode: schedulerName sgx-a and preemptingSchedulerName sgx-b not among the "
            "configuration's profiles (confidential-scheduler): "
            "opted-in pods would wait for a scheduler nobody runs",
            NAME_HINT.format("schedulerName and preemptingSchedulerName"),
            id="neither-scheduler-name-a-profile",
        ),
        pytest.param(
            healthy(
                settings=settings(
                    schedulerName="confidential-scheduler", preemptingSchedulerName="confidential-preempting"
                ),
                scheduler_configuration=changed(NATIVE, second_profile),
            ),
            "ok",
            f"{NATIVE_OK} (profiles confidential-scheduler, confidential-preempting)",
            "",
            id="both-scheduler-names-are-profiles",
        ),
        pytest.param(
            healthy(
                settings=settings(schedulerName="sgx-scheduler"),
                scheduler_configuration=changed(NATIVE, ignoring_epc),
            ),
            "fail",
            f"native mode: {BLIND}; schedulerName sgx-scheduler not among the configuration's profiles "
            "(confidential-scheduler): opted-in pods would wait for a scheduler nobody runs",
            f"{MODE_HINT}; {NAME_HINT.format('schedulerName')}",
            id="both-faults-at-once",
        ),
        pytest.param(
            healthy(settings=settings()),
            "warn",
            f"{NATIVE_OK}, but schedulerName is not set: opted-in pods go to default-scheduler, "
            "which this Deployment does not run (profiles confidential-scheduler)",
            "set schedulerName: confidential-scheduler in the webhook's configuration, or remove the "
            "confidential-scheduler Deployment if the cluster's scheduler runs the extender",
            id="scheduler-name-unset",
        ),
        pytest.param(
            # epcResource overrides the profile's resource: the configuration must manage that one
            healthy(
                settings=settings(schedulerName="confidential-scheduler", epcResource="sgx.intel.com/epc")
            ),
            "fail",
            "no mode for sgx.intel.com/epc: "
            "no extender manages sgx.intel.com/epc: the extender is never asked",
            MODE_HINT,
            id="epc-resource-override-not-managed",
        ),
        pytest.param(
            healthy(
                settings=settings(schedulerName="confidential-scheduler", epcResource="sgx.intel.com/epc"),
                scheduler_configuration=INTEL_NATIVE,
            ),
            "ok",
            f"{NATIVE_OK} (profiles confidential-scheduler)",
            "",
            id="epc-resource-override-managed",
        ),
        pytest.param(
            healthy(deployments={"confidential-pods-webhook": deployment(2)}, scheduler_configuration=None),
            "ok",
            "no confidential-scheduler Deployment: the cluster's own scheduler places EPC pods, with a "
            "configuration the doctor does not read",
            "",
            id="no-scheduler-deployment",
        ),
        pytest.param(
            healthy(
                scheduler_configuration=None,
                unreadable={"scheduler configuration": "403 configmaps is forbidden"},
            ),
            "fail",
            "cannot check the scheduler configuration: 403 configmaps is forbidden",
            UNREAD_HINT,
            id="configmap-unreadable",
        ),
        pytest.param(
            healthy(
                scheduler_configuration=None,
                unreadable={"scheduler configuration": MISSING},
            ),
            "fail",
            f"cannot check the scheduler configuration: {MISSING}",
            UNREAD_HINT,
            id="configmap-missing",
        ),
        pytest.param(
            healthy(unreadable={"deployment confidential-scheduler": "403 deployments is forbidden"}),
            "fail",
            "cannot check: deployment confidential-scheduler: 403 deployments is forbidden",
            "run with credentials that may read it (docs/operate.md lists what the doctor reads)",
            id="deployment-unreadable",
        ),
    ],
)
def test_scheduler_mode(facts: ClusterFacts, status: str, message: str, hint: str) -> None:
    finding = scheduler_mode(facts)
    assert (finding.check, finding.status, finding.message, finding.hint) == (
        "scheduler-mode",
        status,
        message,
        hint,
    )


def test_the_check_runs_in_diagnose_and_reaches_json() -> None:
    """Right after ``scheduler`` (it needs nothing: a Deployment that is not ready may be so because of its
    configuration), and in ``-o json`` as every finding."""
    names = [step.name for step in CHECKS]
    assert names[names.index("scheduler") + 1] == "scheduler-mode"
    by_check = {f.check: f for f in diagnose(healthy(scheduler_configuration=changed(NATIVE, ignoring_epc)))}
    document = by_check["scheduler-mode"].as_json()
    assert document["status"] == "fail" and document["hint"] == MODE_HINT
    assert document["message"].startswith("native mode: profile confidential-scheduler: NodeResourcesFit")
    # a failing scheduler Deployment does not skip it
    unready = {"confidential-pods-webhook": deployment(2), "confidential-scheduler": deployment(0)}
    statuses = {f.check: f.status for f in diagnose(healthy(deployments=unready))}
    assert (statuses["scheduler"], statuses["scheduler-mode"]) == ("fail", "ok")
