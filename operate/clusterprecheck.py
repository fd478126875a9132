"""``confidential-pods precheck`` against the cluster: what in it would refuse what is about to be applied.

Pure: :func:`check_cluster` takes :class:`PrecheckFacts` (the nodes, namespaces and version that
``operate/cluster.py`` reads, the build's configuration and kube-scheduler image) and returns one
:class:`~operate.facts.Finding` per check, as the doctor's checks do:

* ``sgx-nodes``: the SGX nodes and the EPC resource each advertises, against the configured profile's; when
  they advertise another profile's resource, the profile (or ``epcResource``) to set. No SGX node at all is a
  warning: the install starts, EPC pods wait for a device plugin;
* ``pod-security``: the doctor's own check, over the namespaces stored and those the build applies (their
  labels added to the stored ones, as ``kubectl apply`` adds them);
* ``scheduler-version``: the build's kube-scheduler image against the API server's version, by upstream's
  version skew policy (https://kubernetes.io/releases/version-skew-policy/): kube-scheduler must not be newer
  than kube-apiserver, and may be up to one minor version older.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confidential_pods.quantities import format_bytes
from confidential_pods.wire import mapping
from operate.doctor import pod_security
from operate.facts import ClusterFacts, Finding, cannot_read, counting_hint, listed, sgx_nodes_of
from operate.precheck import containers

SCHEDULER_CONTAINER = "kube-scheduler"
#: ``v1.37.2``, ``v1.29.3-gke.1093000``, ``1.30.0+k3s1``: major, minor, patch (build suffixes ignored).
_VERSION = re.compile(r"v?(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?")
_SKEW_POLICY = "https://kubernetes.io/releases/version-skew-policy/"

Version = tuple[int, int, int]


@dataclass(frozen=True)
class PrecheckFacts:
    """What the cluster's checks judge. ``cluster`` holds the configuration's settings (``configured``
    False: the configuration cannot be loaded, and the checks that need it are skipped), the nodes, the
    namespaces (the build's merged in) and what could not be read (``version`` among them)."""

    cluster: ClusterFacts
    configured: bool
    #: The API server's ``gitVersion`` ("" when it could not be read).
    server_version: str
    #: ``(where, image)`` of the build's kube-scheduler; None when no build was given or it holds none.
    scheduler_image: tuple[str, str] | None
    built: bool


def check_cluster(facts: PrecheckFacts) -> list[Finding]:
    """Every check, in the order the README's install steps meet them."""
    if facts.configured:
        judged = [sgx_nodes(facts.cluster), pod_security(facts.cluster)]
    else:
        judged = [
            Finding(check, "skipped", "depends on the configuration, which has keys to set (above)")
            for check in ("sgx-nodes", "pod-security")
        ]
    return [*judged, scheduler_version(facts)]


def sgx_nodes(facts: ClusterFacts) -> Finding:
    """The nodes that advertise the profile's EPC resource; else which SGX resources the nodes advertise, and
    the profile or ``epcResource`` that counts them."""
    check = "sgx-nodes"
    if (problem := cannot_read(check, facts, "nodes")) is not None:
        return problem
    profile = facts.settings.profile
    nodes = sgx_nodes_of(facts.nodes, profile)
    counted, others, epc_like = nodes.counted, nodes.others, nodes.epc_like
    configured = f"{profile.epc_resource} (profile {profile.name})"
    if counted:
        epc = format_bytes(nodes.total)
        found = f"{len(counted)} SGX node(s) advertise {configured}, {epc} of EPC: {listed(counted)}"
        if not epc_like:
            return Finding(check, "ok", found)
        return Finding(
            check,
            "warn",
            f"{found}; {_advertised(epc_like)}, which this profile does not count",
            "one installation counts one EPC resource: the pods it places go to the nodes above only",
        )
    if epc_like:
        resource = next(iter(epc_like))
        return Finding(
            check,
            "fail",
            f"no node advertises {configured}; {_advertised(epc_like)}",
            counting_hint(resource, profile),
        )
    if others:
        return Finding(
            check,
            "fail",
            f"no node advertises {configured}; {_advertised(others)}, none of them EPC",
            "check the SGX device plugin: it advertises SGX resources but no EPC",
        )
    return Finding(
        check,
        "warn",
        f"no node advertises {configured} or any other SGX resource ({len(facts.nodes)} node(s))",
        "install the SGX device plugin of your platform on the SGX nodes (docs/install.md); until then EPC "
        "pods stay Pending",
    )


def _advertised(resources: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{len(names)} node(s) advertise {r}: {listed(names)}" for r, names in resources.items())


def scheduler_version(facts: PrecheckFacts) -> Finding:
    """The build's kube-scheduler against the API server, by the version skew policy."""
    check = "scheduler-version"
    if (problem := cannot_read(check, facts.cluster, "version")) is not None:
        return problem
    server = parse_version(facts.server_version)
    if facts.scheduler_image is None:
        server_is = f"the API server is {facts.server_version}"
        if not facts.built:
            return Finding(check, "skipped", f"no built manifests (-f) to compare: {server_is}")
        return Finding(check, "warn", f"the build holds no kube-scheduler; {server_is}")
    where, image = facts.scheduler_image
    if server is None:
        return Finding(check, "warn", f"the API server's version {facts.server_version!r} is not x.y.z")
    wanted = f"v{server[0]}.{server[1]}.{server[2]}"
    repository = image_repository(image)
    hint = (
        f"set the kube-scheduler image to {repository}:{wanted} (the API server's minor, {_SKEW_POLICY}): "
        f"kustomize edit set image {repository}={repository}:{wanted} in your overlay; chart: "
        f"--set scheduler.image={repository}:{wanted}"
    )
    scheduler = parse_version(image_tag(image) or "")
    if scheduler is None:
        return Finding(
            check,
            "warn",
            f"{where} runs {image}, whose tag names no version; the API server is {facts.server_version}",
            f"make sure it is kube-scheduler {server[0]}.{server[1]}.x, or {hint}",
        )
    skew = skew_problem(scheduler, server)
    said = f"{where} runs kube-scheduler {_short(scheduler)}, the API server is {facts.server_version}"
    if skew is not None:
        return Finding(check, "fail", f"{said}: {skew}", hint)
    if scheduler[1] < server[1]:
        said += " (one minor older: supported; upgrade it with the control plane)"
    return Finding(check, "ok", said)


def skew_problem(scheduler: Version, server: Version) -> str | None:
    """Why kube-scheduler ``scheduler`` may not run against kube-apiserver ``server``; None when it may."""
    if scheduler[:2] > server[:2]:
        return "kube-scheduler must not be newer than the API server"
    if scheduler[0] != server[0]:
        return f"older major version {scheduler[0]} (the API server: {server[0]}); it may be one minor older"
    if server[1] - scheduler[1] > 1:
        return f"{server[1] - scheduler[1]} minor versions older; kube-scheduler may be at most one older"
    return None


def parse_version(text: str) -> Version | None:
    """``v1.37.2`` (a ``gitVersion`` or an image tag) → (1, 37, 2); a missing patch is 0; None: no version."""
    match = _VERSION.match(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _short(version: Version) -> str:
    return f"v{version[0]}.{version[1]}.{version[2]}"


def image_tag(image: str) -> str | None:
    """The tag of ``registry/path/name:tag[@digest]``; None when there is none (a registry's port is not)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.partition(":")[2] or None


def image_repository(image: str) -> str:
    """``registry.k8s.io/kube-scheduler:v1.34.13`` → ``registry.k8s.io/kube-scheduler``."""
    bare = image.split("@", 1)[0]
    head, _, last = bare.rpartition("/")
    name = last.partition(":")[0]
    return f"{head}/{name}" if head else name


def scheduler_image(objects: Sequence[object]) -> tuple[str, str] | None:
    """``(where, image)`` of the build's kube-scheduler: the container named kube-scheduler, or whose image
    is a kube-scheduler image; None when the build has none."""
    for obj in objects:
        if not isinstance(obj, Mapping):
            continue
        for name, image, _ in containers(obj):
            if SCHEDULER_CONTAINER in (name, image_repository(image).rsplit("/", 1)[-1]):
                metadata = mapping(obj.get("metadata"))
                return f"{obj.get('kind')} {metadata.get('name')}, container {name}", image
    return None


def with_built_namespaces(
    stored: Iterable[Mapping[str, Any]], objects: Sequence[object]
) -> list[Mapping[str, Any]]:
    """The namespaces as they are once the build is applied: its Namespaces' labels added to the stored
    namespace of the same name, or the Namespace as built when none is stored."""
    merged: dict[str, Mapping[str, Any]] = {}
    for namespace in stored:
        merged[str(mapping(namespace.get("metadata")).get("name"))] = namespace
    for obj in objects:
        if not isinstance(obj, Mapping) or obj.get("kind") != "Namespace":
            continue
        metadata = mapping(obj.get("metadata"))
        name = str(metadata.get("name"))
        before = mapping(merged.get(name, {}).get("metadata"))
        labels = {**mapping(before.get("labels")), **mapping(metadata.get("labels"))}
        merged[name] = {**obj, "metadata": {**before, **metadata, "labels": labels}}
    return list(merged.values())
