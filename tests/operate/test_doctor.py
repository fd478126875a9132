"""The doctor's checks on seeded facts: each check's ok, warn and fail, and the exit code by the worst."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certs.authority import bundle_pem, certificate_pem, issue_authority, issue_serving, service_names
from confidential_pods.documents import load_document
from confidential_pods.settings import settings_from_mapping
from operate.clusterprecheck import sgx_nodes
from operate.doctor import (
    CHECKS,
    EXIT_CODES,
    ClusterFacts,
    Finding,
    PodSummary,
    aesm_source,
    diagnose,
    epc_overcommit,
    epc_resource,
    pod_security,
    render,
    route_entry,
    scheduler_ready,
    unrouted_epc_pods,
    webhook_configuration,
    webhook_ready,
    worst,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NAMESPACE = "confidential-pods"
EPC = "alibabacloud.com/sgx_epc_MiB"
SETTINGS = settings_from_mapping({"aesm": "host", "schedulerName": "confidential-scheduler"})
MIB = 2**20
REPO = Path(__file__).resolve().parents[2]


def shipped_scheduler_configuration(path: str) -> dict[str, Any]:
    """A KubeSchedulerConfiguration of manifests/, read as the doctor reads the ConfigMap holding it."""
    document: dict[str, Any] = load_document((REPO / path).read_text(), path)
    return document


#: The alibaba overlay's configuration (native mode), as its ConfigMap holds it.
NATIVE = shipped_scheduler_configuration("manifests/overlays/alibaba/scheduler-config.yaml")


def node(name: str, allocatable: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"allocatable": {"cpu": "8", **allocatable}}}


def pod(name: str, node_name: str, epc_mib: int, scheduler: str = "confidential-scheduler") -> PodSummary:
    return PodSummary("shop", name, node_name, scheduler, epc_mib * MIB, finished=False)


def served(days: int = 365, *, other_ca: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(webhook configuration with a caBundle, serving Secret) as the install leaves them."""
    authority = issue_authority(now=NOW - timedelta(days=1))
    names = service_names("confidential-pods-webhook", NAMESPACE)
    serving = issue_serving(authority, names, now=NOW - timedelta(days=1), days=days)
    bundle_ca = issue_authority(now=NOW) if other_ca else authority
    bundle = base64.b64encode(bundle_pem([bundle_ca.certificate])).decode()
    service = {"name": "confidential-pods-webhook", "namespace": NAMESPACE}
    configuration = {
        "webhooks": [
            {"name": name, "clientConfig": {"service": dict(service), "caBundle": bundle}}
            for name in ("namespace.confidential-pods.io", "pod.confidential-pods.io")
        ]
    }
    secret = {"data": {"tls.crt": base64.b64encode(certificate_pem(serving.certificate)).decode()}}
    return configuration, secret


def deployment(ready: int, replicas: int = 2) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


def healthy(**changes: Any) -> ClusterFacts:
    configuration, secret = served()
    facts = ClusterFacts(
        settings=SETTINGS,
        namespace=NAMESPACE,
        now=NOW,
        nodes=[node("sgx-a", {EPC: "93"}), node("plain", {})],
        pods=[pod("kms", "sgx-a", 64), pod("web", "plain", 0, scheduler="default-scheduler")],
        namespaces=[{"metadata": {"name": "shop", "labels": {"confidential-pods.io/injection": "enabled"}}}],
        webhook_configuration=configuration,
        serving_secret=secret,
        deployments={"confidential-pods-webhook": deployment(2), "confidential-scheduler": deployment(2)},
        scheduler_configuration=NATIVE,
        lease={
            "spec": {
                "holderIdentity": "scheduler-0",
                "renewTime": "2026-11-28T11:59:58.000000Z",
                "leaseDurationSeconds": 15,
            }
        },
        daemonsets=[
            {
                "metadata": {"namespace": "kube-system", "name": "node-agent"},
                "spec": {
                    "template": {"spec": {"volumes": [{"name": "s", "hostPath": {"path": "/var/run/aesmd"}}]}}
                },
                "status": {"numberReady": 3},
            }
        ],
    )
    return replace(facts, **changes)


def test_a_healthy_cluster_is_all_ok() -> None:
    findings = diagnose(healthy())
    assert [(f.check, f.status) for f in findings if f.status != "ok"] == []
    assert worst(findings) == "ok" and EXIT_CODES[worst(findings)] == 0
    by_check = {f.check: f for f in findings}
    assert (
        by_check["epc-resource"].message
        == "1 node(s) advertise alibabacloud.com/sgx_epc_MiB (93Mi of EPC in total)"
    )
    assert "leader scheduler-0" in by_check["scheduler"].message
    assert by_check["aesm-source"].message == "AESM from DaemonSet kube-system/node-agent"


def test_profile_resource_missing_names_what_the_nodes_advertise() -> None:
    aks = [node("aks-0", {"sgx.intel.com/epc": "10"}), node("aks-1", {"sgx.intel.com/epc": "10"})]
    finding = epc_resource(healthy(nodes=aks, settings=settings_from_mapping({"profile": "azure"})))
    assert finding.status == "fail"
    assert (
        "kubernetes.azure.com/sgx_epc_mem_in_MiB" in finding.message
        and "sgx.intel.com/epc on 2 node(s)" in finding.message
    )
    # AKS advertises Intel's name in MiB: the hint names both ways and leaves the unit to the device plugin
    assert finding.hint.startswith("set profile: intel in the configuration")
    assert "or keep profile azure and set epcResource: sgx.intel.com/epc with the epcUnit" in finding.hint
    # precheck, judging the same nodes before anything is applied, says the same
    facts = healthy(nodes=aks, settings=settings_from_mapping({"profile": "azure"}))
    assert sgx_nodes(facts).hint == finding.hint
    # With the override the same cluster is fine.
    fixed = settings_from_mapping({"profile": "azure", "epcResource": "sgx.intel.com/epc"})
    assert epc_resource(healthy(nodes=aks, settings=fixed)).status == "ok"


def test_no_sgx_at_all_and_other_sgx_resources() -> None:
    assert "device plugin" in epc_resource(healthy(nodes=[node("plain", {})])).hint
    enclave_only = epc_resource(healthy(nodes=[node("n", {"sgx.intel.com/enclave": "20"})]))
    assert enclave_only.status == "fail" and "no EPC" in enclave_only.hint


@pytest.mark.parametrize(
    ("facts", "status", "text"),
    [
        (healthy(webhook_configuration=None), "fail", "does not exist"),
        (healthy(serving_secret=None), "fail", "holds no readable tls.crt"),
        (healthy(serving_secret={"data": {"tls.crt": "not base64!"}}), "fail", "holds no readable tls.crt"),
        (healthy(unreadable={"serving secret": "403 secrets is forbidden"}), "fail", "cannot check: serving"),
    ],
)
def test_webhook_configuration_faults(facts: ClusterFacts, status: str, text: str) -> None:
    finding = webhook_configuration(facts)
    assert (finding.status, text in finding.message) == (status, True), finding


def test_a_bundle_that_does_not_trust_the_served_certificate() -> None:
    configuration, secret = served(other_ca=True)
    finding = webhook_configuration(healthy(webhook_configuration=configuration, serving_secret=secret))
    assert finding.status == "fail" and "does not verify" in finding.message and finding.hint


def test_an_entry_without_ca_bundle() -> None:
    configuration, secret = served()
    del configuration["webhooks"][1]["clientConfig"]["caBundle"]
    finding = webhook_configuration(healthy(webhook_configuration=configuration, serving_secret=secret))
    assert finding.status == "fail" and "pod.confidential-pods.io has no caBundle" in finding.message


def test_expiry_ahead_is_a_warning_and_expired_a_failure() -> None:
    configuration, secret = served(days=10)
    soon = webhook_configuration(healthy(webhook_configuration=configuration, serving_secret=secret))
    assert soon.status == "warn" and "day(s) left" in soon.message
    later = healthy(webhook_configuration=configuration, serving_secret=secret, now=NOW + timedelta(days=30))
    assert webhook_configuration(later).status == "fail"


@pytest.mark.parametrize(
    ("deployments", "status"),
    [
        ({"confidential-pods-webhook": deployment(0)}, "fail"),
        ({"confidential-pods-webhook": deployment(1)}, "warn"),
        ({"confidential-pods-webhook": {"spec": {"replicas": 2}, "status": {}}}, "fail"),
        ({}, "fail"),  # missing
    ],
)
def test_webhook_readiness(deployments: dict[str, Any], status: str) -> None:
    assert webhook_ready(healthy(deployments=deployments)).status == status


def test_an_unready_webhook_with_an_incomplete_configuration_names_the_key() -> None:
    runv = settings_from_mapping({"runtimeClass": "runv"})
    unready = webhook_ready(healthy(settings=runv, deployments={"confidential-pods-webhook": deployment(0)}))
    assert unready.status == "fail"
    assert "replicas ready: configuration incomplete: aesmSidecarImage: runtimeClass runv" in unready.message
    assert unready.hint.startswith("set aesmSidecarImage in the webhook's configuration")
    ready = webhook_ready(healthy(settings=runv))  # ready anyway (an older configuration): nothing to add
    assert ready.status == "ok" and "incomplete" not in ready.message
    complete = webhook_ready(healthy(deployments={"confidential-pods-webhook": deployment(0)}))
    assert complete.status == "fail" and "incomplete" not in complete.message


def test_scheduler_leader() -> None:
    stale = {
        "spec": {
            "holderIdentity": "scheduler-0",
            "renewTime": "2026-11-28T11:58:00Z",
            "leaseDurationSeconds": 15,
        }
    }
    finding = scheduler_ready(healthy(lease=stale))
    assert finding.status == "fail" and "scheduler-0 last renewed" in finding.message
    assert scheduler_ready(healthy(lease=None)).status == "fail"
    unready = {"confidential-pods-webhook": deployment(2), "confidential-scheduler": deployment(0)}
    assert "0 of 2" in scheduler_ready(healthy(deployments=unready)).message


def test_aesm_source() -> None:
    missing = aesm_source(healthy(daemonsets=[]))
    assert missing.status == "warn" and "components/aesmd" in missing.hint
    named = [
        {"metadata": {"namespace": "kube-system", "name": "sgx-quote-helper"}, "status": {"numberReady": 0}}
    ]
    assert aesm_source(healthy(daemonsets=named)).status == "warn"  # found, but none ready
    sidecar = settings_from_mapping({"aesm": "sidecar", "aesmSidecarImage": "aesmd:1"})
    assert aesm_source(healthy(daemonsets=[], settings=sidecar)).status == "ok"


def test_pod_security_clash() -> None:
    labels = {"confidential-pods.io/injection": "enabled", "pod-security.kubernetes.io/enforce": "restricted"}
    restricted = {"metadata": {"name": "vault", "labels": labels}}
    finding = pod_security(healthy(namespaces=[restricted]))
    assert finding.status == "warn" and "vault (restricted)" in finding.message and "sidecar" in finding.hint


def test_epc_pods_of_another_scheduler() -> None:
    rogue = [pod("kms", "sgx-a", 16), pod("rogue", "sgx-a", 16, scheduler="default-scheduler")]
    finding = unrouted_epc_pods(healthy(pods=rogue))
    assert finding.status == "warn" and "shop/rogue (default-scheduler)" in finding.message
    assert "routeEPCPods" in finding.hint
    finished = [replace(rogue[1], finished=True)]
    assert unrouted_epc_pods(healthy(pods=finished)).status == "ok"


def test_overcommit() -> None:
    over = [pod("a", "sgx-a", 64), pod("b", "sgx-a", 64)]
    finding = epc_overcommit(healthy(pods=over))
    assert finding.status == "fail" and "sgx-a (128Mi of 93Mi)" in finding.message


def test_route_entry_and_key_go_together() -> None:
    configuration, _ = served()
    configuration["webhooks"].append({"name": "route.confidential-pods.io"})
    assert route_entry(healthy(webhook_configuration=configuration)).status == "warn"
    routing = replace(SETTINGS, route_epc_pods=True)
    assert route_entry(healthy(settings=routing)).status == "warn"
    assert route_entry(healthy(settings=routing, webhook_configuration=configuration)).message.endswith(
        "routed"
    )


def test_unreadable_data_is_a_failure_that_says_so() -> None:
    facts = healthy(unreadable={"nodes": "403 nodes is forbidden", "pods": "403 pods is forbidden"})
    for check in (epc_resource, epc_overcommit, unrouted_epc_pods):
        finding = check(facts)
        assert finding.status == "fail" and "403" in finding.message


def test_exit_code_and_rendering() -> None:
    findings = [Finding("a", "ok", "fine"), Finding("bb", "warn", "meh", "do this")]
    assert worst(findings) == "warn" and EXIT_CODES["warn"] == 1
    assert render(findings) == "ok    a   fine\nwarn  bb  meh\n          → do this\n"
    assert worst([*findings, Finding("c", "fail", "bad")]) == "fail"


#: Faults and what each does to the checks that depend on the failed one: (facts, {check: status}).
MISSING_CONFIGURATION = healthy(webhook_configuration=None)
NO_EPC_NODES = healthy(nodes=[node("plain", {})])
PODS_FORBIDDEN = healthy(unreadable={"pods": "403 pods is forbidden"})


@pytest.mark.parametrize(
    ("facts", "expected", "depends_on"),
    [
        pytest.param(
            MISSING_CONFIGURATION,
            {"webhook-configuration": "fail", "route-epc-pods": "skipped", "epc-overcommit": "ok"},
            {"route-epc-pods": ("webhook-configuration",)},
            id="no-webhook-configuration",
        ),
        pytest.param(
            healthy(unreadable={"webhook configuration": "403 forbidden"}),
            {"webhook-configuration": "fail", "route-epc-pods": "skipped"},
            {"route-epc-pods": ("webhook-configuration",)},
            id="webhook-configuration-unreadable",
        ),
        pytest.param(
            NO_EPC_NODES,
            {"epc-resource": "fail", "epc-overcommit": "skipped", "route-epc-pods": "ok"},
            {
                "epc-overcommit": ("epc-resource",),
                "attestation-readiness": ("epc-resource",),
                "epc-limits": ("epc-resource",),
            },
            id="no-node-advertises-epc",
        ),
        pytest.param(
            PODS_FORBIDDEN,
            {"epc-resource": "ok", "epc-pods-scheduler": "fail", "epc-overcommit": "skipped"},
            {"epc-overcommit": ("epc-pods-scheduler",)},
            id="pods-unreadable",
        ),
        pytest.param(
            healthy(unreadable={"nodes": "403 nodes is forbidden", "pods": "403 pods is forbidden"}),
            {"epc-resource": "fail", "epc-pods-scheduler": "fail", "epc-overcommit": "skipped"},
            {
                "epc-overcommit": ("epc-resource", "epc-pods-scheduler"),
                "attestation-readiness": ("epc-resource",),
                "epc-limits": ("epc-resource",),
            },
            id="nodes-and-pods-unreadable",
        ),
        pytest.param(
            # a warning is not a failure: what depends on it still runs
            healthy(pods=[pod("kms", "sgx-a", 16), pod("rogue", "sgx-a", 16, scheduler="default-scheduler")]),
            {"epc-pods-scheduler": "warn", "epc-overcommit": "ok"},
            {},
            id="warning-does-not-skip",
        ),
    ],
)
def test_checks_that_depend_on_a_failed_one_are_skipped(
    facts: ClusterFacts, expected: dict[str, str], depends_on: dict[str, tuple[str, ...]]
) -> None:
    by_check = {f.check: f for f in diagnose(facts)}
    assert {name: by_check[name].status for name in expected} == expected
    skipped = {name: f for name, f in by_check.items() if f.status == "skipped"}
    assert {name: f.depends_on for name, f in skipped.items()} == depends_on
    for finding in skipped.values():
        assert finding.message == "depends on " + ", ".join(f"{n} (fail)" for n in finding.depends_on)
        assert finding.hint == "" and finding.as_json()["dependsOn"] == list(finding.depends_on)
    # a check is skipped only because another failed: the verdict is that failure's
    assert worst(by_check.values()) == ("fail" if skipped else "warn")


def test_every_prerequisite_is_an_earlier_check() -> None:
    names = [step.name for step in CHECKS]
    assert len(set(names)) == len(names)
    assert [f.check for f in diagnose(healthy())] == names
    for position, step in enumerate(CHECKS):
        assert set(step.needs) <= set(names[:position]), step


def test_a_skipped_check_is_rendered_with_its_status_spelled_out() -> None:
    findings = [
        Finding("a", "fail", "bad", "fix"),
        Finding("b", "skipped", "depends on a (fail)", depends_on=("a",)),
    ]
    assert render(findings) == ("fail     a  bad\n            → fix\nskipped  b  depends on a (fail)\n")
    assert worst(findings) == "fail" and worst(findings[1:]) == "ok"
    assert "dependsOn" not in findings[0].as_json()
