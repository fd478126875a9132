"""charts/confidential-pods as Helm users expect it (issue 23, item 4), through ``helm template``:
values.schema.json refuses typos, the release namespace is honoured everywhere, every workload takes the
usual scheduling values, kube-scheduler's image follows the cluster's version, the certs Job is one per
revision, and the chart README is what helm-docs generates from values.yaml.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.manifests.building import (
    CHART,
    CHART_VALUES,
    KustomizeError,
    Manifest,
    containers,
    find,
    find_tool,
    helm_template,
)

INTEL = CHART_VALUES["intel"]
HELM_DOCS_VERSION = "v1.14.2"
HELM_DOCS_INSTALL_COMMAND = (
    f"GOFLAGS=-mod=mod go install github.com/norwoodj/helm-docs/cmd/helm-docs@{HELM_DOCS_VERSION}"
)
WORKLOADS = ("Deployment", "DaemonSet", "Job", "CronJob")


def pod_spec(obj: Manifest) -> Manifest:
    template = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    spec: Manifest = template["template"]["spec"]
    return spec


def pod_annotations(obj: Manifest) -> dict[str, str]:
    template = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    annotations: dict[str, str] = template["template"]["metadata"].get("annotations", {})
    return annotations


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every string in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from strings(item, f"{path}[]")
    elif isinstance(value, str):
        yield path, value


#: Where the overlays' namespace name may still be written whole: what is named like it but is no namespace
#: (the MutatingWebhookConfiguration, which the certs ClusterRole names too, and the PrometheusRule; labels).
NOT_A_NAMESPACE = (
    ".metadata.name",
    ".rules[].resourceNames[]",
    ".groups[].name",
    ".app.kubernetes.io/part-of",
    ".app.kubernetes.io/name",
)
#: How a namespace is written inside a longer string: DNS names, flags, config keys, PromQL, cert-manager.
IN_TEXT = re.compile(
    r"\.confidential-pods(\.(?!io\b)|$)|^--namespace=confidential-pods$|Namespace: confidential-pods\b"
    r'|namespace="confidential-pods"|^confidential-pods/'
)


# --- values.schema.json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["webhook.replicas=two"], "at '/webhook/replicas': got string, want integer"),
        (["webhook.replicas=0"], "at '/webhook/replicas': minimum: got 0, want 1"),
        (["webhok.replicas=1"], "additional properties 'webhok' not allowed"),
        (["scheduler.imagePullPolicy=Always"], "additional properties 'imagePullPolicy' not allowed"),
        (["image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of"),
        (["certs.mode=vault"], "at '/certs/mode': value must be one of 'own', 'cert-manager'"),
        (["aesmd.enabled=yes"], "at '/aesmd/enabled': got string, want null or boolean"),
        (["webhook.tolerations.key=x"], "at '/webhook/tolerations': got object, want array"),
        (["imagePullSecrets[0]=regcred"], "at '/imagePullSecrets/0': got string, want object"),
        (["prometheusRule.certificateExpiryDays=soon"], "at '/prometheusRule/certificateExpiryDays'"),
    ],
)
def test_the_schema_refuses_typos_and_wrong_types(helm: str, values: list[str], message: str) -> None:
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, "overlay=azure", *values)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("config.profil=intel", "at '/config': additional properties 'profil' not allowed"),
        ("config.defaultEPC=lots", "at '/config/defaultEPC'"),
    ],
)
def test_a_misspelt_configuration_key_fails(helm: str, value: str, message: str) -> None:
    """``config``'s schema is generated from the configuration's (confidential_pods/config.schema.json)."""
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, "overlay=azure", value)


def test_every_value_of_values_yaml_is_in_the_schema() -> None:
    """values.yaml's keys are the schema's (a value added to one and not the other fails here, before a
    user finds it refused), down to the objects the schema closes."""
    import yaml

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or node.get("additionalProperties") is not False:
            return
        for key, item in value.items():
            assert key in node["properties"], f"{path}{key}: in values.yaml, not in values.schema.json"
            walk(item, node["properties"][key], f"{path}{key}.")
        # deeper: Kubernetes types and the configuration, whose other fields values.yaml leaves unset
        if path.count(".") <= 1 and path != "config.":
            for key in node["properties"]:
                assert key in value or key == "global", f"{path}{key}: in values.schema.json, not values.yaml"

    walk(values, schema, "")


# --- the release namespace ---------------------------------------------------------------------------------

RELEASE = "cp-system"


@pytest.fixture(scope="module")
def elsewhere(helm: str) -> list[Manifest]:
    """Every optional part on, released into another namespace than the overlays use."""
    return helm_template(
        helm,
        *INTEL,
        "monitoring.enabled=true",
        "routeEPCPods=true",
        "dashboard.enabled=true",
        "prometheusRule.enabled=true",
        namespace=RELEASE,
    )


def test_every_namespaced_object_is_in_the_release_namespace(elsewhere: list[Manifest]) -> None:
    aesmd = {"DaemonSet", "ServiceAccount", "ConfigMap"}
    for obj in elsewhere:
        namespace = obj["metadata"].get("namespace")
        name = obj["metadata"]["name"]
        if obj["kind"] == "Namespace":
            assert name == f"{RELEASE}-aesmd", "Helm creates the release namespace (--create-namespace)"
        elif namespace == f"{RELEASE}-aesmd":
            assert obj["kind"] in aesmd and ("aesmd" in name or "node-probe" in name), name
        elif namespace == "kube-system":  # reading the apiserver's client CA, where it is
            assert name == "confidential-scheduler-extension-apiserver-authentication-reader"
        elif namespace is not None:
            assert namespace == RELEASE, (obj["kind"], name)


def test_every_reference_follows_the_release_namespace(elsewhere: list[Manifest]) -> None:
    """The webhook's Service, the namespaces left out, RBAC subjects, the certificate's names, the lease, the
    webhook's ownNamespace: nothing names the overlays' namespace."""
    import yaml

    for obj in elsewhere:
        where = (obj["kind"], obj["metadata"]["name"])
        for path, text in strings(obj):
            assert not IN_TEXT.search(text), (where, path, text)
            if text == "confidential-pods":
                assert path.endswith(NOT_A_NAMESPACE), (where, path)
                if path in (".metadata.name", ".spec.groups[].name"):
                    assert obj["kind"] in ("MutatingWebhookConfiguration", "PrometheusRule"), where

    configuration = find(elsewhere, "MutatingWebhookConfiguration", "confidential-pods")
    for entry in configuration["webhooks"]:
        assert entry["clientConfig"]["service"]["namespace"] == RELEASE
        (excluded,) = [
            e["values"]
            for e in entry["namespaceSelector"]["matchExpressions"]
            if e["operator"] == "NotIn" and e["key"] == "kubernetes.io/metadata.name"
        ]
        assert RELEASE in excluded and "confidential-pods" not in excluded
    policy = find(elsewhere, "ValidatingAdmissionPolicy", "confidential-pods-annotations")
    assert RELEASE in policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"][0]["values"]
    config = yaml.safe_load(find(elsewhere, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"])
    assert config["ownNamespace"] == RELEASE
    scheduler = yaml.safe_load(
        find(elsewhere, "ConfigMap", "confidential-scheduler-config")["data"]["config.yaml"]
    )
    assert scheduler["leaderElection"]["resourceNamespace"] == RELEASE
    for obj in elsewhere:
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for subject in obj["subjects"]:
                assert subject["namespace"] in (RELEASE, f"{RELEASE}-aesmd"), obj["metadata"]["name"]
    (job,) = [o for o in elsewhere if o["kind"] == "Job"]
    assert f"--namespace={RELEASE}" in pod_spec(job)["containers"][0]["args"]  # the certificate's DNS names
    monitor = find(elsewhere, "ServiceMonitor", "confidential-pods-webhook")
    assert (
        monitor["spec"]["endpoints"][0]["tlsConfig"]["serverName"]
        == f"confidential-pods-webhook.{RELEASE}.svc"
    )


def test_cert_manager_names_follow_the_release_namespace(helm: str) -> None:
    objects = helm_template(helm, "overlay=base", "certs.mode=cert-manager", namespace=RELEASE)
    certificate = find(objects, "Certificate", "confidential-pods-webhook")
    assert f"confidential-pods-webhook.{RELEASE}.svc" in certificate["spec"]["dnsNames"]
    configuration = find(objects, "MutatingWebhookConfiguration", "confidential-pods")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{RELEASE}/confidential-pods-webhook"
    }


@pytest.mark.parametrize(
    ("values", "namespace", "message"),
    [
        ([], "default", "release namespace default: the webhook never mutates pods in its own namespace"),
        (["config.ownNamespace=elsewhere"], RELEASE, 'config.ownNamespace "elsewhere": the webhook\'s own'),
        (
            ["scheduler.config=leaderElection: {resourceNamespace: kube-system}"],
            RELEASE,
            'leaderElection.resourceNamespace "kube-system" is not the release namespace "cp-system"',
        ),
        (  # kube-scheduler's defaults, which the chart's Role does not grant: it would never lead
            ["scheduler.config=apiVersion: kubescheduler.config.k8s.io/v1"],
            RELEASE,
            'leaderElection.resourceNamespace "kube-system" (kube-scheduler\'s default when unset) is not '
            'the release namespace "cp-system"',
        ),
        (
            [f"scheduler.config=leaderElection:\n  resourceNamespace: {RELEASE}"],
            RELEASE,
            'leaderElection.resourceName "kube-scheduler" (kube-scheduler\'s default when unset): the '
            "chart's Role lets the scheduler hold only the lease confidential-scheduler",
        ),
        (["scheduler.config=[1"], RELEASE, "scheduler.config: not a YAML mapping"),
    ],
)
def test_namespaces_the_chart_cannot_honour_fail(
    helm: str, values: list[str], namespace: str, message: str
) -> None:
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, "overlay=azure", *values, namespace=namespace)


def test_a_release_namespace_too_long_for_the_aesmd_one_asks_to_name_it(helm: str) -> None:
    long = "n" * 60  # a valid release namespace; with -aesmd, 66 characters: no namespace name
    with pytest.raises(KustomizeError, match=re.escape(f'aesmd.namespace: "{long}-aesmd", the release')):
        helm_template(helm, *INTEL, namespace=long)
    objects = helm_template(helm, *INTEL, "aesmd.namespace=sgx-system", namespace=long)
    assert find(objects, "DaemonSet", "confidential-pods-aesmd")["metadata"]["namespace"] == "sgx-system"
    assert helm_template(helm, "overlay=azure", namespace=long)  # no DaemonSet, no aesmd namespace


def test_the_aesmd_namespace_can_be_named(helm: str) -> None:
    objects = helm_template(helm, *INTEL, "aesmd.namespace=sgx-system")
    assert find(objects, "DaemonSet", "confidential-pods-aesmd")["metadata"]["namespace"] == "sgx-system"
    assert find(objects, "Namespace", "sgx-system")


# --- scheduling values of every workload -------------------------------------------------------------------

SCHEDULING = {
    "nodeSelector": {"pool": "system"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"example.com/owner": "platform"},
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
}
#: The workloads and the value key holding their scheduling values: (kind, name) → key.
OWNERS = {
    ("Deployment", "confidential-pods-webhook"): "webhook",
    ("Deployment", "confidential-scheduler"): "scheduler",
    ("DaemonSet", "confidential-pods-aesmd"): "aesmd",
    ("CronJob", "confidential-pods-certs-rotate"): "certs",
    ("Job", "confidential-pods-certs-install"): "certs",
}


def test_every_workload_takes_the_scheduling_values(helm: str) -> None:
    values = [
        f"{owner}.{key}={json.dumps(SCHEDULING[key])}"
        for owner in sorted(set(OWNERS.values()))
        for key in SCHEDULING
    ]
    objects = helm_template_json(helm, list(INTEL), [*values, 'imagePullSecrets=[{"name": "regcred"}]'])
    workloads = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in WORKLOADS}
    assert set(workloads) == set(OWNERS)
    for key, obj in workloads.items():
        spec = pod_spec(obj)
        for field in ("nodeSelector", "tolerations", "priorityClassName"):
            assert spec[field] == SCHEDULING[field], (key, field)
        assert spec["imagePullSecrets"] == [{"name": "regcred"}], key
        assert pod_annotations(obj) == SCHEDULING["podAnnotations"], key
        # Helm merges a map given with the default's (the defaults' podAntiAffinity, aesmd's SGX resources)
        assert spec["affinity"]["nodeAffinity"] == SCHEDULING["affinity"]["nodeAffinity"], key
        resources = spec["containers"][0]["resources"]
        for kind, amounts in SCHEDULING["resources"].items():
            assert amounts.items() <= resources[kind].items(), key


def test_the_second_containers_have_resources_of_their_own(helm: str) -> None:
    resources = {"requests": {"cpu": "300m"}}
    objects = helm_template_json(
        helm,
        list(INTEL),
        [
            f"scheduler.extenderResources={json.dumps(resources)}",
            f"aesmd.probeResources={json.dumps(resources)}",
        ],
    )
    extender = [c for _, c in containers(find(objects, "Deployment", "confidential-scheduler"))][1]
    probe = [c for _, c in containers(find(objects, "DaemonSet", "confidential-pods-aesmd"))][-1]
    assert (extender["name"], extender["resources"]["requests"]["cpu"]) == ("extender", "300m")
    assert (probe["name"], probe["resources"]["requests"]["cpu"]) == ("node-probe", "300m")


def helm_template_json(helm: str, values: list[str], json_values: list[str]) -> list[Manifest]:
    """``helm_template`` with ``--set-json`` values as well (objects and lists as a user writes them)."""
    import yaml

    from tests.manifests.building import NAMESPACE, OVERLAY_KUBE_VERSION

    command = [helm, "template", "confidential-pods", str(CHART), "--namespace", NAMESPACE]
    command += ["--kube-version", OVERLAY_KUBE_VERSION]
    for value in values:
        command += ["--set", value]
    for value in json_values:
        command += ["--set-json", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_a_disruption_budget_only_with_a_replica_to_spare(helm: str, replicas: int) -> None:
    """minAvailable 1 of a single replica refuses every eviction: kubectl drain of its node never ends."""
    objects = helm_template(
        helm, "overlay=azure", f"webhook.replicas={replicas}", f"scheduler.replicas={replicas}"
    )
    budgets = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget")
    assert budgets == ([] if replicas == 1 else ["confidential-pods-webhook", "confidential-scheduler"])
    for name in budgets:
        assert find(objects, "PodDisruptionBudget", name)["spec"]["minAvailable"] == 1


# --- kube-scheduler's image --------------------------------------------------------------------------------


def scheduler_image(objects: list[Manifest]) -> str:
    deployment = find(objects, "Deployment", "confidential-scheduler")
    image: str = pod_spec(deployment)["containers"][0]["image"]
    return image


@pytest.mark.parametrize(
    ("kube_version", "values", "image"),
    [
        ("v1.33.4", [], "registry.k8s.io/kube-scheduler:v1.33.4"),
        ("v1.31.2-eks-7f9249a", [], "registry.k8s.io/kube-scheduler:v1.31.2"),  # a distribution's suffix
        ("v1.30.0+k3s1", [], "registry.k8s.io/kube-scheduler:v1.30.0"),
        ("v1.35.1", ["scheduler.imageRepository=mirror.example.com/ks"], "mirror.example.com/ks:v1.35.1"),
        ("v1.35.1", ["scheduler.image=mirror.example.com/ks:v1.34.13"], "mirror.example.com/ks:v1.34.13"),
    ],
)
def test_kube_schedulers_image_follows_the_cluster(
    helm: str, kube_version: str, values: list[str], image: str
) -> None:
    assert scheduler_image(helm_template(helm, "overlay=azure", *values, kube_version=kube_version)) == image


def test_clusters_older_than_the_chart_supports_are_refused(helm: str) -> None:
    with pytest.raises(KustomizeError, match=re.escape("chart requires kubeVersion: >=1.30.0-0")):
        helm_template(helm, "overlay=azure", kube_version="v1.29.9")


# --- the certs Job -----------------------------------------------------------------------------------------


def test_the_certs_job_is_one_per_revision_and_goes_away_when_finished(helm: str) -> None:
    """A Job's pod template is immutable: an upgrade with a new image must create a new Job, not patch the
    last one (tests/e2e/test_helm_install.py upgrades a real release)."""
    (job,) = [
        o
        for o in helm_template(helm, "overlay=azure", "certs.jobTTLSecondsAfterFinished=600")
        if o["kind"] == "Job"
    ]
    assert job["metadata"]["name"] == "confidential-pods-certs-install"  # revision 1 (helm template's)
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert not job["metadata"].get("annotations"), (
        "no hook: helm install --wait would wait on the webhook first"
    )


# --- the README --------------------------------------------------------------------------------------------


def test_the_chart_readme_is_what_helm_docs_generates() -> None:
    helm_docs = find_tool("helm-docs")
    if helm_docs is None:
        pytest.fail(
            f"helm-docs not found (PATH, ~/go/bin); install it with: {HELM_DOCS_INSTALL_COMMAND}",
            pytrace=False,
        )
    result = subprocess.run(
        [helm_docs, "--chart-search-root", str(CHART), "--dry-run", "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    assert result.stdout.strip() == readme.strip(), (
        "charts/confidential-pods/README.md is stale: run helm-docs --chart-search-root charts"
    )
    for key in ("overlay", "scheduler.image", "webhook.tolerations", "aesmd.image", "prometheusRule.enabled"):
        assert f"| {key} |" in readme, key


def test_lint_with_every_optional_part(helm: str) -> None:
    command = [helm, "lint", "--strict", str(CHART), "--namespace", RELEASE, "--kube-version", "v1.34.2"]
    for value in (*INTEL, "monitoring.enabled=true", "dashboard.enabled=true", "prometheusRule.enabled=true"):
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the documented command --------------------------------------------------------------------------------


@pytest.mark.parametrize("document", ["docs/install.md", "charts/confidential-pods/README.md"])
def test_the_documented_install_renders(helm: str, document: str) -> None:
    """The ``helm install`` the docs show, as ``helm template`` with the same arguments: a release namespace
    of its own and every value the overlay requires (the chart refuses ``default`` and missing values)."""
    text = (CHART.parents[1] / document).read_text()
    (command,) = re.findall(
        r"^helm install confidential-pods charts/confidential-pods (.*?)(?<!\\)$",
        text.replace("\\\n", " "),
        re.M,
    )
    args = command.split()
    assert "--namespace" in args and "default" not in args
    args = [a for a in args if a != "--create-namespace"]
    result = subprocess.run(
        [helm, "template", "confidential-pods", str(CHART), *args, "--kube-version", "v1.34.2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


PROBE = ("DaemonSet", "confidential-pods-node-probe")


def _probe_of(objects: list[Manifest]) -> tuple[Manifest, Manifest]:
    spec = pod_spec(find(objects, *PROBE))
    (probe,) = spec["containers"]
    return spec, probe


@pytest.mark.parametrize(
    ("values", "resource", "amount"),
    [
        ((*CHART_VALUES["alibaba"], "nodeProbe.enabled=true"), "alibabacloud.com/sgx_epc_MiB", "1"),
        (("overlay=azure", "nodeProbe.enabled=true"), "kubernetes.azure.com/sgx_epc_mem_in_MiB", "1"),
        ((*INTEL, "aesmd.enabled=false", "nodeProbe.enabled=true"), "sgx.intel.com/epc", "1Mi"),
        (  # a cluster whose plugin advertises another resource (config.epcResource, epcUnit)
            (
                "overlay=azure",
                "nodeProbe.enabled=true",
                "config.epcResource=sgx.intel.com/epc",
                "config.epcUnit=bytes",
            ),
            "sgx.intel.com/epc",
            "1Mi",
        ),
    ],
)
def test_the_node_probe_alone_asks_one_mib_of_the_configured_epc_and_tolerates_what_pods_tolerate(
    helm: str, values: tuple[str, ...], resource: str, amount: str
) -> None:
    """The chart's node probe (opt-in, never beside the aesmd DaemonSet) runs where a device plugin advertises
    the configured EPC resource, on the taints the configuration's pods tolerate, in
    ``<release>-node-probe``, with the identity bound there."""
    objects = helm_template(helm, *values)
    spec, probe = _probe_of(objects)
    for side in ("requests", "limits"):
        assert probe["resources"][side][resource] == amount
    config = find(objects, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"]
    tolerations = yaml.safe_load(config).get("tolerations")
    assert spec.get("tolerations") == (tolerations or None)
    namespace = find(objects, *PROBE)["metadata"]["namespace"]
    assert namespace == "confidential-pods-node-probe"
    binding = find(objects, "ClusterRoleBinding", "confidential-pods-node-probe")
    assert binding["subjects"][0]["namespace"] == namespace
    assert ("DaemonSet", "confidential-pods-aesmd") not in {
        (o["kind"], o["metadata"]["name"]) for o in objects
    }


def test_the_node_probe_takes_its_values(helm: str) -> None:
    """skip [] checks the node's aesmd too; resources, scheduling values and the namespace as given."""
    objects = helm_template_json(
        helm,
        [*CHART_VALUES["alibaba"], "nodeProbe.enabled=true", "nodeProbe.namespace=sgx-probe"],
        [
            "nodeProbe.skip=[]",
            f"nodeProbe.resources={json.dumps(SCHEDULING['resources'])}",
            *(f"nodeProbe.{key}={json.dumps(SCHEDULING[key])}" for key in SCHEDULING if key != "resources"),
        ],
    )
    spec, probe = _probe_of(objects)
    assert not any(arg.startswith("--skip") for arg in probe["args"])
    # the node's aesmd checked: its socket directory mounted read-only (docs/attestation.md's kustomize patch)
    assert "--aesm-socket=/var/run/aesmd/aesm.socket" in probe["args"]
    assert {"name": "aesmd-socket", "mountPath": "/var/run/aesmd", "readOnly": True} in probe["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["aesmd-socket"]["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}
    assert probe["resources"] == SCHEDULING["resources"]
    for field in ("nodeSelector", "tolerations", "priorityClassName", "affinity"):
        assert spec[field] == SCHEDULING[field], field
    assert pod_annotations(find(objects, *PROBE)) == SCHEDULING["podAnnotations"]
    assert {o["metadata"].get("namespace") for o in objects if "node-probe" in o["metadata"]["name"]} == {
        "sgx-probe",
        None,  # the ClusterRole, its binding, the admission policy and its binding
    }


@pytest.mark.parametrize("case", ["alibaba", "azure", "base"])
def test_the_node_probe_alone_is_opt_in(helm: str, case: str) -> None:
    objects = helm_template(helm, *CHART_VALUES[case])
    assert not [o for o in objects if "node-probe" in o["metadata"]["name"]]
