"""The secondary scheduler: KubeSchedulerConfiguration field by field, its pod, its RBAC."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from confidential_pods.profiles import PROFILES
from extender.modes import MODES, Mode, ModeReport, classify
from tests.manifests.building import INSTALLS, PROFILE_OF, Manifest, find
from tests.manifests.upstream_types import STRUCTS, unknown_fields

#: Go's time.ParseDuration units, as metav1.Duration parses httpTimeout.
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def scheduler_configuration(objects: list[Manifest]) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", "confidential-scheduler-config")
    assert set(config_map["data"]) == {"config.yaml"}
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return loaded


def scheduler_flags(objects: list[Manifest]) -> list[str]:
    """The kube-scheduler container's flags other than ``--config`` (which points into the ConfigMap)."""
    command: list[str] = _container(objects, "kube-scheduler")["command"]
    return [arg for arg in command[1:] if not arg.startswith("--config=")]


def _pod_spec(objects: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "Deployment", "confidential-scheduler")["spec"]["template"]["spec"]
    return spec


def _container(objects: list[Manifest], name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [c for c in _pod_spec(objects)["containers"] if c["name"] == name]
    assert len(matches) == 1, name
    return matches[0]


def _flags(args: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


@pytest.mark.parametrize("name", INSTALLS)
def test_only_upstream_fields(built: dict[str, list[Manifest]], name: str) -> None:
    configuration = scheduler_configuration(built[name])
    assert configuration["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert configuration["kind"] == "KubeSchedulerConfiguration"
    assert unknown_fields(configuration, "KubeSchedulerConfiguration") == []
    for extender in configuration["extenders"]:
        assert STRUCTS["Extender"].required <= set(extender)
        for resource in extender["managedResources"]:
            assert STRUCTS["ExtenderManagedResource"].required <= set(resource)


def test_the_field_check_sees_misspelt_fields() -> None:
    configuration = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "leaderElection": {"leaderElect": True, "resourceNameSpace": "x"},
        "extenders": [
            {"urlPrefix": "http://x", "managedResources": [{"name": "a/b", "ignoredByscheduler": True}]}
        ],
    }
    assert unknown_fields(configuration, "KubeSchedulerConfiguration") == [
        ".leaderElection.resourceNameSpace: no such field in LeaderElectionConfiguration "
        "(k8s.io/component-base/config/v1alpha1/types.go)",
        ".extenders[0].managedResources[0].ignoredByscheduler: no such field in ExtenderManagedResource "
        "(k8s.io/kube-scheduler/config/v1/types.go)",
    ]


@pytest.fixture(params=[(name, mode) for mode in MODES for name in INSTALLS], ids=lambda p: f"{p[0]}-{p[1]}")
def build(request: pytest.FixtureRequest) -> tuple[str, Mode, list[Manifest]]:
    """(install, mode, objects): each install as shipped (native) and with its ledger-mode component."""
    name, mode = request.param
    fixture = "built" if mode == "native" else "built_ledger"
    return name, mode, request.getfixturevalue(fixture)[name]


def test_extender_settings(build: tuple[str, Mode, list[Manifest]]) -> None:
    name, mode, objects = build
    configuration = scheduler_configuration(objects)
    (extender,) = configuration["extenders"]
    resource = PROFILES[PROFILE_OF[name]].epc_resource
    assert classify(configuration, resource) == ModeReport(mode, ("confidential-scheduler",), ())
    assert extender["managedResources"] == [{"name": resource}]
    assert extender["preemptVerb"] == "preempt"
    assert extender["filterVerb"] == "filter"
    if mode == "ledger":
        assert extender["prioritizeVerb"] == "prioritize"
        assert extender["bindVerb"] == "bind"
        # kube-scheduler's validation: a prioritizing extender needs a positive weight.
        assert isinstance(extender["weight"], int) and extender["weight"] > 0
    else:  # kube-scheduler scores and binds: one round trip per pod, the filter's
        assert not {"prioritizeVerb", "bindVerb", "weight"} & set(extender)
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is False
    assert extender["enableHTTPS"] is False and "tlsConfig" not in extender
    assert GO_DURATION.match(extender["httpTimeout"])
    # The URL points at the sidecar in the same pod, on the host and port it is told to serve.
    flags = _flags(_container(objects, "extender")["args"])
    assert extender["urlPrefix"] == f"http://{flags['host']}:{flags['port']}"
    assert flags["host"] == "127.0.0.1"


def test_profile_and_leader_election(build: tuple[str, Mode, list[Manifest]]) -> None:
    name, mode, objects = build
    configuration = scheduler_configuration(objects)
    (profile,) = configuration["profiles"]
    # kube-scheduler's adaptive sample: NodeResourcesFit counts EPC, nodes without free EPC are not feasible.
    assert "percentageOfNodesToScore" not in configuration
    webhook_config = yaml.safe_load(
        find(objects, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"]
    )
    resource = PROFILES[PROFILE_OF[name]].epc_resource
    # One profile: EPC counted in NodeResourcesFit, so preemption's dry run sees it; pods that may preempt
    # need no profile of their own.
    if mode == "native":
        assert profile == {
            "schedulerName": "confidential-scheduler",
            "pluginConfig": [
                {
                    "name": "NodeResourcesFit",
                    "args": {
                        "scoringStrategy": {
                            "type": "LeastAllocated",
                            "resources": [
                                {"name": "cpu", "weight": 1},
                                {"name": "memory", "weight": 1},
                                {"name": resource, "weight": 3},
                            ],
                        }
                    },
                }
            ],
        }
    else:
        assert profile == {"schedulerName": "confidential-scheduler"}
    assert webhook_config["schedulerName"] == profile["schedulerName"]
    assert "preemptingSchedulerName" not in webhook_config

    election = configuration["leaderElection"]
    deployment = find(objects, "Deployment", "confidential-scheduler")
    assert election["leaderElect"] is True
    assert election["resourceLock"] == "leases"
    assert election["resourceNamespace"] == deployment["metadata"]["namespace"]
    role = find(objects, "Role", "confidential-scheduler-leader-election")
    assert role["metadata"]["namespace"] == election["resourceNamespace"]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]} in role[
        "rules"
    ]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [election["resourceName"]],
        "verbs": ["get", "update"],
    } in role["rules"]


@pytest.mark.parametrize("name", INSTALLS)
def test_scheduler_pod(built: dict[str, list[Manifest]], name: str) -> None:
    objects = built[name]
    spec = _pod_spec(objects)
    scheduler = _container(objects, "kube-scheduler")
    match = re.fullmatch(r"registry\.k8s\.io/kube-scheduler:v1\.(\d+)\.(\d+)", scheduler["image"])
    assert match and int(match.group(1)) >= 33, scheduler["image"]
    assert scheduler["command"][0] == "/usr/local/bin/kube-scheduler"
    flags = _flags(scheduler["command"])
    config_path = flags["config"]
    # Bounds how long a pod refused from an out-of-date ledger waits for a retry (docs/extender.md).
    assert flags["pod-max-in-unschedulable-pods-duration"] == "60s"
    (mount,) = [m for m in scheduler["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    config_map = find(objects, "ConfigMap", "confidential-scheduler-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_path.rsplit("/", 1)[1] in config_map["data"]
    assert spec["serviceAccountName"] == "confidential-scheduler"
    assert find(objects, "Deployment", "confidential-scheduler")["spec"]["replicas"] >= 1
    # The extender's verbs are not reachable from outside the pod (its probes run inside it); the one port
    # it declares is the metrics-only listener (tests/extender/test_serving.py: nothing else is served there).
    extender = _container(objects, "extender")
    assert "--host=127.0.0.1" in extender["args"] and "--port=8444" in extender["args"]
    assert extender["ports"] == [{"name": "metrics", "containerPort": 8445, "protocol": "TCP"}]
    assert "--metrics-port=8445" in extender["args"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert "127.0.0.1:8444" in " ".join(extender[probe]["exec"]["command"])


def _bound_cluster_roles(objects: list[Manifest], account: str) -> set[str]:
    return {
        o["roleRef"]["name"]
        for o in objects
        if o["kind"] == "ClusterRoleBinding"
        and {"kind": "ServiceAccount", "name": account, "namespace": "confidential-pods"} in o["subjects"]
    }


@pytest.mark.parametrize("name", INSTALLS)
def test_scheduler_rbac(built: dict[str, list[Manifest]], name: str) -> None:
    objects = built[name]
    assert _bound_cluster_roles(objects, "confidential-scheduler") == {
        "system:kube-scheduler",
        "system:volume-scheduler",
        "confidential-pods-extender",
    }
    reader = find(objects, "RoleBinding", "confidential-scheduler-extension-apiserver-authentication-reader")
    assert reader["metadata"]["namespace"] == "kube-system"
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    extender_role = find(objects, "ClusterRole", "confidential-pods-extender")
    granted = {
        (resource, verb)
        for rule in extender_role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert all(rule["apiGroups"] == [""] for rule in extender_role["rules"])
    assert granted == {
        ("nodes", "list"),
        ("nodes", "watch"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "watch"),
        ("pods/binding", "create"),
    }
