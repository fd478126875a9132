"""Building manifests/ with kustomize, and finding objects in the result.

Shared by tests/manifests and usable by other suites (the e2e harness registers the webhook
configuration and RBAC of these builds). kustomize is found through $KUSTOMIZE, then PATH, then
~/go/bin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUSTOMIZE_VERSION = "v5.8.2"
INSTALL_COMMAND = f"GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"
CHART = REPO / "charts" / "confidential-pods"
INSTALL_DOC = REPO / "docs" / "install.md"
ATTESTATION_DOC = REPO / "docs" / "attestation.md"
HELM_VERSION = "v3.22.0"
HELM_INSTALL_COMMAND = f"GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"

#: Every kustomization users build, by the name the tests use.
BUILDS: dict[str, Path] = {
    "base": MANIFESTS / "base",
    "alibaba": MANIFESTS / "overlays" / "alibaba",
    "intel": MANIFESTS / "overlays" / "intel",
    "azure": MANIFESTS / "overlays" / "azure",
    "cert-manager": MANIFESTS / "overlays" / "cert-manager",
    "runtimeclasses": MANIFESTS / "runtimeclasses",
}
#: Builds that deploy confidential-pods (everything but the RuntimeClass examples).
INSTALLS = ("base", "alibaba", "intel", "azure", "cert-manager")
#: The profile each install's configuration names.
PROFILE_OF = {
    "base": "alibaba",
    "alibaba": "alibaba",
    "intel": "intel",
    "azure": "azure",
    "cert-manager": "alibaba",
}

#: The ledger-mode component (manifests/components/ledger-mode/<profile>) each install takes.
LEDGER_COMPONENT = {name: f"ledger-mode/{profile}" for name, profile in PROFILE_OF.items()}

Manifest = dict[str, Any]


class KustomizeError(Exception):
    """`kustomize build` failed; the message carries its stderr."""


def find_tool(name: str) -> str | None:
    """A Go tool: ``$<NAME>``, then PATH, then ~/go/bin (where ``go install`` puts it)."""
    explicit = os.environ.get(name.upper())
    if explicit:
        return explicit if Path(explicit).is_file() else None
    on_path = shutil.which(name)
    if on_path:
        return on_path
    go_bin = Path.home() / "go" / "bin" / name
    return str(go_bin) if go_bin.is_file() else None


def find_kustomize() -> str | None:
    return find_tool("kustomize")


#: The namespace the overlays install into, and the chart's release namespace in the tests.
NAMESPACE = "confidential-pods"
#: The Kubernetes version the overlays' kube-scheduler image is (the chart's follows the cluster's version).
OVERLAY_KUBE_VERSION = re.search(
    r"image: registry\.k8s\.io/kube-scheduler:(v[0-9.]+)\n",
    (MANIFESTS / "base" / "scheduler.yaml").read_text(),
)[1]  # type: ignore[index]

#: What the chart must be given for each overlay (it refuses to render without): the alibaba region and aesmd
#: sidecar image, the intel aesmd DaemonSet's image and PCCS. The drift test gives kustomize the same.
REGION = "cn-hangzhou"
AESMD_IMAGE = "registry.example.com/aesmd:2.26"
PCCS_URL = "https://pccs.example.internal:8081/sgx/certification/v4/"
CHART_VALUES: dict[str, tuple[str, ...]] = {
    "alibaba": (f"region={REGION}", f"config.aesmSidecarImage={AESMD_IMAGE}"),
    "azure": ("overlay=azure",),
    "intel": ("overlay=intel", f"aesmd.image={AESMD_IMAGE}", f"config.dcap.pccsUrl={PCCS_URL}"),
    "base": ("overlay=base",),
}


def helm_template(
    helm: str, *values: str, namespace: str = NAMESPACE, kube_version: str = OVERLAY_KUBE_VERSION
) -> list[Manifest]:
    """``helm template`` of the chart with ``--set`` ``values`` as a release in ``namespace`` on a cluster of
    ``kube_version``; the objects it renders."""
    command = [helm, "template", "confidential-pods", str(CHART), "--namespace", namespace]
    command += ["--kube-version", kube_version]
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise KustomizeError(f"helm template {' '.join(values)} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def kustomize_build(kustomize: str, directory: Path) -> list[Manifest]:
    result = subprocess.run(
        [kustomize, "build", str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise KustomizeError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


#: The ConfigMap components/node-probe reads: what an overlay that adds it generates (docs/install.md).
NODE_PROBE_CONFIG: Manifest = {
    "name": "confidential-pods-node-probe-config",
    "namespace": "confidential-pods-node-probe",
    "files": ["config.yaml"],
}


def build_with_components(
    kustomize: str,
    install: str,
    components: list[str],
    work: Path,
    patches: list[Manifest] | None = None,
) -> list[Manifest]:
    """``install`` (a name of :data:`BUILDS`) with optional components of manifests/components added, as a
    user's overlay adds them (a kustomization in ``work`` naming both by relative path: kustomize refuses
    absolute ones), and the overlay's own ``patches`` if given. With ``node-probe``, the overlay also
    generates the ConfigMap that component reads from the install's configuration file (docs/install.md)."""

    def relative(path: Path) -> str:
        return os.path.relpath(path, work)

    kustomization: Manifest = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(BUILDS[install])],
        "components": [relative(MANIFESTS / "components" / name) for name in components],
    }
    if patches:
        kustomization["patches"] = patches
    work.mkdir(parents=True, exist_ok=True)
    if "node-probe" in components:
        shutil.copyfile(BUILDS[install] / "config.yaml", work / "config.yaml")
        kustomization["configMapGenerator"] = [NODE_PROBE_CONFIG]
    (work / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize_build(kustomize, work)


def documented_patches(marker: str, document: Path = INSTALL_DOC) -> list[Manifest]:
    """The ``patches`` of the one YAML block of ``document`` that contains ``marker``: what the docs tell an
    operator to add to an overlay, built by the tests exactly as written."""
    blocks = re.findall(r"```yaml\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.DOTALL)
    (block,) = [b for b in blocks if marker in b]
    patches: list[Manifest] = yaml.safe_load(block)["patches"]
    return patches


def sent(entry: Manifest, pod: Manifest) -> bool:
    """Whether the API server sends the CREATE of ``pod`` to this webhook entry by its matchConditions
    (all must be true), evaluated with cel-python."""
    import celpy  # type: ignore[import-untyped]

    environment = celpy.Environment()
    request = {"operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"}}
    activation = {"object": celpy.json_to_cel(pod), "request": celpy.json_to_cel(request)}
    for condition in entry.get("matchConditions", []):
        result = environment.program(environment.compile(condition["expression"])).evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), f"{condition['name']} must evaluate to bool"
        if not result:
            return False
    return True


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of this kind (and name, or name prefix for hash-suffixed ConfigMaps)."""
    matches = [
        o
        for o in objects
        if o["kind"] == kind
        and (
            name is None
            or o["metadata"]["name"] == name
            or (kind == "ConfigMap" and _generated_from(o["metadata"]["name"], name))
        )
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def containers(obj: Manifest) -> Iterator[tuple[Manifest, Manifest]]:
    """(pod spec, container) of every container and init container of a workload."""
    if obj["kind"] == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] in ("Deployment", "Job", "DaemonSet", "StatefulSet"):
        spec = obj["spec"]["template"]["spec"]
    else:
        return
    for key in ("initContainers", "containers"):
        for container in spec.get(key, []):
            yield spec, container


def _generated_from(generated: str, name: str) -> bool:
    """Whether ``generated`` is ``name`` plus the content hash configMapGenerator appends."""
    base, _, suffix = generated.rpartition("-")
    return base == name and len(suffix) == 10
