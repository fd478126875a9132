"""Every kustomization builds, and every object it yields is a valid Kubernetes object."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate
import pytest
import yaml

from tests.manifests.building import (
    ATTESTATION_DOC,
    BUILDS,
    INSTALL_DOC,
    INSTALLS,
    MANIFESTS,
    NODE_PROBE_CONFIG,
    KustomizeError,
    Manifest,
    build_with_components,
    containers,
    documented_patches,
    find,
    kustomize_build,
)

#: Oldest Kubernetes the manifests support (matchConditions GA in 1.30; scheduler image 1.34),
#: and the newest schema kubernetes-validate ships.
VERSIONS = ("1.33.0", kubernetes_validate.latest_version())

# cert-manager's CRDs are not in the Kubernetes OpenAPI schema. The subset of cert-manager.io/v1
# we use, written from cert-manager's pkg/apis/certmanager/v1 types (json tags), with
# additionalProperties false so a misspelt field fails like a strict OpenAPI check.
_ISSUER_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"type": "string"},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
}


def _object(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The schema of a whole object of ``kind``: exactly apiVersion, kind, metadata and ``spec``."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False, **spec},
        },
    }


_DURATION = {"type": "string", "pattern": r"^(\d+h)?(\d+m)?(\d+s)?$"}
_USAGES = ["digital signature", "key encipherment", "server auth", "client auth", "cert sign"]
CERT_MANAGER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Certificate": _object(
        "cert-manager.io/v1",
        "Certificate",
        {
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": {"type": "string"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
                "duration": _DURATION,
                "renewBefore": _DURATION,
                "isCA": {"type": "boolean"},
                "usages": {"type": "array", "items": {"enum": _USAGES}},
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "issuerRef": _ISSUER_REF,
            },
        },
    ),
    "Issuer": _object(
        "cert-manager.io/v1",
        "Issuer",
        {
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": {"type": "object", "additionalProperties": False},
                "ca": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["secretName"],
                    "properties": {"secretName": {"type": "string"}},
                },
            },
        },
    ),
}

EXAMPLE_FILES = [*sorted((MANIFESTS / "examples").glob("*.yaml")), MANIFESTS / "runtimeclasses" / "runv.yaml"]


def validate(obj: Manifest, version: str) -> None:
    if obj["apiVersion"].startswith("cert-manager.io/"):
        jsonschema.validate(obj, CERT_MANAGER_SCHEMAS[obj["kind"]])
        return
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_object_validates_strictly(built: dict[str, list[Manifest]], name: str, version: str) -> None:
    errors = []
    for obj in built[name]:
        try:
            validate(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("version", VERSIONS)
def test_examples_validate_strictly(path: Path, version: str) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert documents
    for obj in documents:
        validate(obj, version)


def test_a_misspelt_field_is_caught() -> None:
    """The strict check is not a no-op: an unknown field fails, for core kinds and cert-manager's."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"secretName": "s", "issuerRef": {"name": "i"}, "dnsName": ["x"]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(certificate, VERSIONS[0])


EXPECTED_OBJECTS = {
    ("Namespace", "confidential-pods"),
    ("ServiceAccount", "confidential-pods-webhook"),
    ("ServiceAccount", "confidential-scheduler"),
    ("Deployment", "confidential-pods-webhook"),
    ("PodDisruptionBudget", "confidential-pods-webhook"),
    ("Service", "confidential-pods-webhook"),
    ("MutatingWebhookConfiguration", "confidential-pods"),
    ("ValidatingAdmissionPolicy", "confidential-pods-annotations"),
    ("ValidatingAdmissionPolicyBinding", "confidential-pods-annotations"),
    ("Deployment", "confidential-scheduler"),
    ("PodDisruptionBudget", "confidential-scheduler"),
    ("ConfigMap", "confidential-pods-config"),
    ("ConfigMap", "confidential-scheduler-config"),
    ("ClusterRoleBinding", "confidential-scheduler-as-kube-scheduler"),
    ("ClusterRoleBinding", "confidential-scheduler-as-volume-scheduler"),
    ("RoleBinding", "confidential-scheduler-extension-apiserver-authentication-reader"),
    ("Role", "confidential-scheduler-leader-election"),
    ("RoleBinding", "confidential-scheduler-leader-election"),
    ("ClusterRole", "confidential-pods-extender"),
    ("ClusterRoleBinding", "confidential-pods-extender"),
}
OUR_CERTS = {
    ("ServiceAccount", "confidential-pods-certs"),
    ("Role", "confidential-pods-certs"),
    ("RoleBinding", "confidential-pods-certs"),
    ("ClusterRole", "confidential-pods-certs"),
    ("ClusterRoleBinding", "confidential-pods-certs"),
    ("Job", "confidential-pods-certs-install"),
    ("CronJob", "confidential-pods-certs-rotate"),
}
#: components/pod-security-lookup, in the cloud overlays: the webhook may read namespaces (get only).
POD_SECURITY_LOOKUP = {
    ("ClusterRole", "confidential-pods-webhook"),
    ("ClusterRoleBinding", "confidential-pods-webhook"),
}
CLOUD_OVERLAYS = ("alibaba", "intel", "azure")
#: components/node-probe/identity: the node probe's cluster-wide identity, in both places the probe runs.
PROBE_IDENTITY = {
    ("ServiceAccount", "confidential-pods-node-probe"),
    ("ClusterRole", "confidential-pods-node-probe"),
    ("ClusterRoleBinding", "confidential-pods-node-probe"),
    ("ValidatingAdmissionPolicy", "confidential-pods-node-probe"),
    ("ValidatingAdmissionPolicyBinding", "confidential-pods-node-probe"),
}
#: components/aesmd, in the intel overlay: the AESM DaemonSet (the probe beside aesmd), in its own namespace.
AESMD = {
    ("Namespace", "confidential-pods-aesmd"),
    ("DaemonSet", "confidential-pods-aesmd"),
    ("ConfigMap", "confidential-pods-aesmd-config"),
} | PROBE_IDENTITY
#: components/node-probe (opt-in; docs/install.md): the node probe alone, in a namespace of its own.
NODE_PROBE = {
    ("Namespace", "confidential-pods-node-probe"),
    ("DaemonSet", "confidential-pods-node-probe"),
    ("ConfigMap", "confidential-pods-node-probe-config"),
} | PROBE_IDENTITY
CERT_MANAGER = {
    ("Issuer", "confidential-pods-selfsigned"),
    ("Certificate", "confidential-pods-ca"),
    ("Issuer", "confidential-pods-ca"),
    ("Certificate", "confidential-pods-webhook"),
}


def _identity(obj: Manifest) -> tuple[str, str]:
    name: str = obj["metadata"]["name"]
    if obj["kind"] == "ConfigMap":  # configMapGenerator appends a content hash
        name = name.rsplit("-", 1)[0]
    return obj["kind"], name


@pytest.mark.parametrize("name", INSTALLS)
def test_each_install_has_exactly_the_expected_objects(built: dict[str, list[Manifest]], name: str) -> None:
    expected = EXPECTED_OBJECTS | (CERT_MANAGER if name == "cert-manager" else OUR_CERTS)
    if name in CLOUD_OVERLAYS:
        expected |= POD_SECURITY_LOOKUP
    if name == "intel":
        expected |= AESMD
    identities = [_identity(o) for o in built[name]]
    assert len(identities) == len(set(identities)), "duplicate objects"
    assert set(identities) == expected


@pytest.mark.parametrize("name", INSTALLS)
def test_namespaces_are_explicit(built: dict[str, list[Manifest]], name: str) -> None:
    """Namespaced objects sit in confidential-pods, except the one RoleBinding kube-system needs."""
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for obj in built[name]:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["metadata"]["name"]
        elif obj["metadata"]["name"] == "confidential-scheduler-extension-apiserver-authentication-reader":
            assert namespace == "kube-system"
        elif _identity(obj) in AESMD:
            assert namespace == "confidential-pods-aesmd"
        else:
            assert namespace == "confidential-pods", f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("name", INSTALLS)
def test_servers_get_no_service_link_variables(built: dict[str, list[Manifest]], name: str) -> None:
    """Neither server reads the variables kubelet adds for every Service of the namespace; without them a
    pod's environment stays small (the API client re-read it on every request, docs/performance.md)."""
    deployments = [o for o in built[name] if o["kind"] == "Deployment"]
    names = {d["metadata"]["name"] for d in deployments}
    assert names >= {"confidential-pods-webhook", "confidential-scheduler"}
    for deployment in deployments:
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False, deployment["metadata"]


@pytest.mark.parametrize("name", INSTALLS)
def test_every_container_is_hardened(built: dict[str, list[Manifest]], name: str) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities, seccomp,
    requests and a memory limit: the "restricted" Pod Security Standard the namespace enforces."""
    workloads = [o for o in built[name] if o["kind"] in ("Deployment", "Job", "CronJob")]
    assert workloads
    for obj in workloads:
        for pod, container in containers(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            pod_security = pod.get("securityContext", {})
            security = container.get("securityContext", {})
            assert pod_security.get("runAsNonRoot") is True, where
            assert pod_security.get("runAsUser", 0) != 0, where
            assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("privileged"), where
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where
            assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
            for volume in pod.get("volumes", []):
                assert "hostPath" not in volume, where


def test_namespace_enforces_restricted(built: dict[str, list[Manifest]]) -> None:
    namespace = find(built["base"], "Namespace", "confidential-pods")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", INSTALLS)
def test_webhook_deployment_is_highly_available(built: dict[str, list[Manifest]], name: str) -> None:
    deployment = find(built[name], "Deployment", "confidential-pods-webhook")
    pdb = find(built[name], "PodDisruptionBudget", "confidential-pods-webhook")
    service = find(built[name], "Service", "confidential-pods-webhook")
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    port = container["ports"][0]
    assert port["containerPort"] == 8443 and service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    # A token only where the webhook may read namespaces' Pod Security levels (and nothing else).
    assert spec["template"]["spec"]["automountServiceAccountToken"] is (name in CLOUD_OVERLAYS)
    if name in CLOUD_OVERLAYS:
        role = find(built[name], "ClusterRole", "confidential-pods-webhook")
        assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]
        bindings = [o for o in built[name] if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
        bound = [b for b in bindings if any(s["name"] == "confidential-pods-webhook" for s in b["subjects"])]
        assert [b["roleRef"]["name"] for b in bound] == ["confidential-pods-webhook"]


@pytest.mark.parametrize("overlay", ["alibaba", "intel", "azure"])
def test_cloud_overlay_with_cert_manager_component(kustomize: str, tmp_path: Path, overlay: str) -> None:
    """The combination docs/install.md shows: a cloud overlay plus the cert-manager component."""
    overlay_path = os.path.relpath(MANIFESTS / "overlays" / overlay, tmp_path)
    component_path = os.path.relpath(MANIFESTS / "components" / "cert-manager", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {overlay_path}\ncomponents:\n  - {component_path}\n",
        encoding="utf-8",
    )
    objects = kustomize_build(kustomize, tmp_path)
    identities = {_identity(o) for o in objects}
    assert identities == EXPECTED_OBJECTS | CERT_MANAGER | POD_SECURITY_LOOKUP | (
        AESMD if overlay == "intel" else set()
    )
    for obj in objects:
        validate(obj, VERSIONS[0])
    config = yaml.safe_load(find(objects, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"])
    assert config["profile"] == overlay


def test_aesmd_component(built: dict[str, list[Manifest]]) -> None:
    """The AESM DaemonSet (intel overlay): SGX nodes only, EPC + enclave + provision, the socket
    directory created on a fresh node, the QCNL file as a regular file, probes on the socket."""
    objects = built["intel"]
    namespace = find(objects, "Namespace", "confidential-pods-aesmd")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    daemonset = find(objects, "DaemonSet", "confidential-pods-aesmd")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert (
        term["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "intel.feature.node.kubernetes.io/sgx"
    )
    aesmd, probe = spec["containers"]
    assert aesmd["name"] == "aesmd" and probe["name"] == "node-probe"
    assert aesmd["image"] == "aesmd-image-required.invalid/aesmd:set-me"  # required: set it
    wanted = {"sgx.intel.com/epc": "1Mi", "sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"}
    for side in ("requests", "limits"):
        assert wanted.items() <= aesmd["resources"][side].items()
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["aesmd-socket"]["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}
    assert {
        "name": "qcnl",
        "mountPath": "/etc/sgx_default_qcnl.conf",
        "subPath": "sgx_default_qcnl.conf",
        "readOnly": True,
    } in aesmd["volumeMounts"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "test -S /var/run/aesmd/aesm.socket" in aesmd[probe]["exec"]["command"][-1]
    (init,) = spec["initContainers"]
    assert init["args"][:1] == ["qcnl"] and init["image"].startswith("ghcr.io/confidential-pods/")
    config_map = volumes["config"]["configMap"]["name"]
    generated = find(objects, "ConfigMap", "confidential-pods-aesmd-config")
    assert config_map == generated["metadata"]["name"]
    webhook_config = find(objects, "ConfigMap", "confidential-pods-config")
    assert generated["data"]["config.yaml"] == webhook_config["data"]["config.yaml"]  # one source


def test_the_node_probe_runs_beside_aesmd_with_a_token_of_its_own(built: dict[str, list[Manifest]]) -> None:
    """The AESM DaemonSet's node-probe container: it checks this pod's aesmd socket and QCNL file and the
    host's devices, read-only, non-root; only it holds a token, of a ServiceAccount that may get Nodes and
    patch their status, nothing else."""
    objects = built["intel"]
    spec = find(objects, "DaemonSet", "confidential-pods-aesmd")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "confidential-pods-node-probe"
    aesmd, probe = spec["containers"]
    mounts = {m["name"]: m for m in probe["volumeMounts"]}
    assert all(m.get("readOnly") is True for m in mounts.values()), mounts
    assert mounts["probe-token"]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert "probe-token" not in {m["name"] for m in aesmd["volumeMounts"]}  # aesmd gets no token
    assert probe["args"][0] == "node-probe"
    flags = dict(arg.split("=", 1) for arg in probe["args"][1:])
    assert flags["--qcnl-config"] == f"{mounts['qcnl']['mountPath']}/sgx_default_qcnl.conf"
    assert flags["--aesm-socket"] == f"{mounts['aesmd-socket']['mountPath']}/aesm.socket"
    assert flags["--dev-dir"] == mounts["host-dev"]["mountPath"]
    assert probe["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    context = probe["securityContext"]
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    sources = volumes["probe-token"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    role = find(objects, "ClusterRole", "confidential-pods-node-probe")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    binding = find(objects, "ClusterRoleBinding", "confidential-pods-node-probe")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "confidential-pods-node-probe",
            "namespace": "confidential-pods-aesmd",
        }
    ]


def test_node_probe_component(kustomize: str, tmp_path: Path, built: dict[str, list[Manifest]]) -> None:
    """The node probe alone (alibaba overlay, where ACK's nodes or the pods' sidecars bring aesmd): it runs
    where the device plugin advertises EPC (one unit, the SGX node pools' taint tolerated), checks the host's
    devices, the QCNL file rendered from the webhook's own configuration and its PCCS, not the host's aesmd;
    read-only, non-root; its token only in its container, of the ServiceAccount the shared identity binds.
    Added to the alibaba overlay as docs/install.md says, with the ConfigMap it reads."""
    objects = build_with_components(kustomize, "alibaba", ["node-probe"], tmp_path)
    assert {_identity(o) for o in objects} == {_identity(o) for o in built["alibaba"]} | NODE_PROBE
    for obj in objects:
        validate(obj, VERSIONS[0])
    namespace = find(objects, "Namespace", "confidential-pods-node-probe")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    spec = find(objects, "DaemonSet", "confidential-pods-node-probe")["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "confidential-pods-node-probe"
    config = yaml.safe_load(find(objects, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"])
    assert spec["tolerations"] == config["tolerations"]  # the taints opted-in pods tolerate
    (probe,) = spec["containers"]
    for side in ("requests", "limits"):
        assert probe["resources"][side]["alibabacloud.com/sgx_epc_MiB"] == "1"
    assert probe["args"][0] == "node-probe"
    flags = [arg.split("=", 1) for arg in probe["args"][1:]]
    assert ["--skip", "aesm"] in flags
    assert not any(flag == "--aesm-socket" for flag, _ in flags)
    mounts = {m["name"]: m for m in probe["volumeMounts"]}
    assert all(m.get("readOnly") is True for m in mounts.values()), mounts
    assert "aesmd-socket" not in mounts
    values = dict(flags)
    assert values["--qcnl-config"] == f"{mounts['qcnl']['mountPath']}/sgx_default_qcnl.conf"
    assert values["--dev-dir"] == mounts["host-dev"]["mountPath"]
    assert mounts["probe-token"]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    context = probe["securityContext"]
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False
    (init,) = spec["initContainers"]
    assert init["args"][:1] == ["qcnl"] and "probe-token" not in {m["name"] for m in init["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    generated = find(objects, "ConfigMap", "confidential-pods-node-probe-config")
    assert volumes["config"]["configMap"]["name"] == generated["metadata"]["name"]
    assert (
        generated["data"]["config.yaml"]
        == find(objects, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"]
    )  # one source
    binding = find(objects, "ClusterRoleBinding", "confidential-pods-node-probe")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "confidential-pods-node-probe",
            "namespace": "confidential-pods-node-probe",
        }
    ]
    assert find(objects, "ClusterRole", "confidential-pods-node-probe") == find(
        built["intel"], "ClusterRole", "confidential-pods-node-probe"
    )
    assert find(objects, "ValidatingAdmissionPolicy", "confidential-pods-node-probe") == find(
        built["intel"], "ValidatingAdmissionPolicy", "confidential-pods-node-probe"
    )


def test_the_probe_beside_aesmd_and_the_probe_alone_exclude_each_other(
    kustomize: str, tmp_path: Path
) -> None:
    """Two probes on a node would write one condition in turn: kustomize refuses the build that adds the probe
    alone to the intel overlay, whose aesmd DaemonSet runs the probe, naming the shared identity."""
    with pytest.raises(KustomizeError, match=r"already registered id.*confidential-pods-node-probe"):
        build_with_components(kustomize, "intel", ["node-probe"], tmp_path)


def test_the_documented_patch_makes_the_probe_alone_check_the_nodes_aesmd(
    kustomize: str, tmp_path: Path
) -> None:
    """docs/attestation.md's patch, as written, for clusters whose host-mode pods quote through the node's
    aesmd: the skip becomes the socket's path, mounted read-only from the node (the chart's ``skip: []``)."""
    patches = documented_patches("name: confidential-pods-node-probe}", ATTESTATION_DOC)
    objects = build_with_components(kustomize, "alibaba", ["node-probe"], tmp_path, patches)
    spec = find(objects, "DaemonSet", "confidential-pods-node-probe")["spec"]["template"]["spec"]
    (probe,) = spec["containers"]
    assert "--skip=aesm" not in probe["args"] and "--aesm-socket=/var/run/aesmd/aesm.socket" in probe["args"]
    assert {"name": "aesmd-socket", "mountPath": "/var/run/aesmd", "readOnly": True} in probe["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["aesmd-socket"]["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}


def test_the_tests_add_the_node_probe_as_docs_install_says() -> None:
    """What docs/install.md tells an overlay to add for the node probe is what the tests add (the component by
    its path, NODE_PROBE_CONFIG), so the builds above prove the documented overlay."""
    blocks = re.findall(r"```yaml\n(.*?)```", INSTALL_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    (block,) = [yaml.safe_load(b) for b in blocks if "confidential-pods-node-probe-config" in b]
    assert block["configMapGenerator"] == [NODE_PROBE_CONFIG]
    (component,) = block["components"]
    assert component.endswith("/manifests/components/node-probe")
