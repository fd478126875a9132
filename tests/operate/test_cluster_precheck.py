"""``precheck``'s cluster side on seeded facts: the SGX nodes' EPC resource against the profile, opted-in
namespaces' Pod Security, the build's kube-scheduler against the API server's version (skew policy). The
command against a real kube-apiserver: tests/e2e/test_precheck.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from confidential_pods.settings import settings_from_mapping
from operate.clusterprecheck import (
    PrecheckFacts,
    check_cluster,
    image_repository,
    image_tag,
    parse_version,
    scheduler_image,
    sgx_nodes,
    skew_problem,
    with_built_namespaces,
)
from operate.facts import ClusterFacts

NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
ALIBABA = "alibabacloud.com/sgx_epc_MiB"
INTEL = "sgx.intel.com/epc"


def node(name: str, allocatable: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", **allocatable}}}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def facts(config: dict[str, Any] | None = None, **fields: Any) -> ClusterFacts:
    settings = settings_from_mapping(config or {})
    return ClusterFacts(settings=settings, namespace="", now=NOW, **fields)


def scheduler_deployment(image: str, container: str = "kube-scheduler") -> dict[str, Any]:
    spec = {"containers": [{"name": container, "image": image}]}
    return {
        "kind": "Deployment",
        "metadata": {"name": "confidential-scheduler", "namespace": "confidential-pods"},
        "spec": {"template": {"spec": spec}},
    }


@pytest.mark.parametrize(
    ("config", "nodes", "status", "said", "hint"),
    [
        pytest.param(
            {}, [node("a", {ALIBABA: "93"}), node("b", {})], "ok",
            [f"1 SGX node(s) advertise {ALIBABA} (profile alibaba), 93Mi of EPC: a"], "",
            id="profile-matches",
        ),
        pytest.param(
            {}, [node("i1", {INTEL: "100Mi", "sgx.intel.com/enclave": "20"}), node("i2", {INTEL: "1Gi"})],
            "fail",
            [f"no node advertises {ALIBABA} (profile alibaba)", f"2 node(s) advertise {INTEL}: i1, i2"],
            "set profile: intel in the configuration", id="intel-nodes-alibaba-config",
        ),
        pytest.param(
            {"profile": "intel"}, [node("a", {ALIBABA: "93"})], "fail", [f"advertise {ALIBABA}: a"],
            "set profile: alibaba in the configuration (the alibaba overlay does; MiB), or keep profile "
            f"intel and set epcResource: {ALIBABA} with the epcUnit its device plugin counts in "
            f"(MiB or bytes); the scheduler configuration must count {ALIBABA} too",
            id="alibaba-nodes-intel-config",
        ),
        pytest.param(
            {"epcResource": INTEL, "epcUnit": "bytes"}, [node("i1", {INTEL: "100Mi"})], "ok",
            [f"advertise {INTEL} (profile alibaba), 100Mi of EPC: i1"], "", id="epc-resource-set",
        ),
        pytest.param(
            {}, [node("a", {ALIBABA: "93"}), node("i1", {INTEL: "100Mi"})], "warn",
            [f"advertise {ALIBABA}", f"1 node(s) advertise {INTEL}: i1, which this profile does not count"],
            "one installation counts one EPC resource", id="mixed",
        ),
        pytest.param(
            {}, [node("x", {"example.com/sgx_enclave": "1"})], "fail", ["none of them EPC"],
            "check the SGX device plugin", id="sgx-but-no-epc",
        ),
        pytest.param(
            {}, [node("a", {}), node("b", {})], "warn",
            [f"no node advertises {ALIBABA} (profile alibaba) or any other SGX resource (2 node(s))"],
            "install the SGX device plugin", id="none-at-all",
        ),
        pytest.param({}, [], "warn", ["(0 node(s))"], "install the SGX device plugin", id="no-nodes"),
    ],
)  # fmt: skip
def test_sgx_nodes_name_the_resource_and_what_to_set(
    config: dict[str, Any], nodes: list[dict[str, Any]], status: str, said: list[str], hint: str
) -> None:
    finding = sgx_nodes(facts(config, nodes=nodes))
    assert finding.status == status, finding
    for words in said:
        assert words in finding.message, finding.message
    assert finding.hint.startswith(hint), finding.hint


def test_nodes_that_cannot_be_read_are_said() -> None:
    finding = sgx_nodes(facts(unreadable={"nodes": "403 nodes is forbidden"}))
    assert (finding.status, finding.message) == ("fail", "cannot check: nodes: 403 nodes is forbidden")


@pytest.mark.parametrize(
    ("scheduler", "server", "problem"),
    [
        ("v1.37.2", "v1.37.0", None),
        ("v1.36.9", "v1.37.2", None),
        ("v1.34.13", "v1.37.2", "3 minor versions older; kube-scheduler may be at most one older"),
        ("v1.35.0", "v1.37.2", "2 minor versions older; kube-scheduler may be at most one older"),
        ("v1.38.0", "v1.37.2", "kube-scheduler must not be newer than the API server"),
        ("v2.0.0", "v1.37.2", "kube-scheduler must not be newer than the API server"),
        ("v0.9.0", "v1.37.2", "older major version 0 (the API server: 1); it may be one minor older"),
    ],
)
def test_skew_follows_the_version_skew_policy(scheduler: str, server: str, problem: str | None) -> None:
    parsed_scheduler, parsed_server = parse_version(scheduler), parse_version(server)
    assert parsed_scheduler is not None and parsed_server is not None
    assert skew_problem(parsed_scheduler, parsed_server) == problem


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("v1.37.2", (1, 37, 2)),
        ("v1.29.3-gke.1093000", (1, 29, 3)),
        ("1.30.0+k3s1", (1, 30, 0)),
        ("v1.31", (1, 31, 0)),
        ("latest", None),
        ("", None),
    ],
)
def test_versions_as_api_servers_and_image_tags_write_them(
    text: str, version: tuple[int, int, int] | None
) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize(
    ("image", "repository", "tag"),
    [
        ("registry.k8s.io/kube-scheduler:v1.34.13", "registry.k8s.io/kube-scheduler", "v1.34.13"),
        ("mirror.example:5000/k8s/kube-scheduler", "mirror.example:5000/k8s/kube-scheduler", None),
        ("r.example/kube-scheduler:v1.37.2@sha256:" + "0" * 64, "r.example/kube-scheduler", "v1.37.2"),
        ("r.example/kube-scheduler@sha256:" + "0" * 64, "r.example/kube-scheduler", None),
        ("kube-scheduler:v1.36.1", "kube-scheduler", "v1.36.1"),
    ],
)
def test_image_references(image: str, repository: str, tag: str | None) -> None:
    assert (image_repository(image), image_tag(image)) == (repository, tag)


def precheck_facts(
    image: str | None, server: str = "v1.37.2", built: bool = True, **fields: Any
) -> PrecheckFacts:
    where = "Deployment confidential-scheduler, container kube-scheduler"
    return PrecheckFacts(
        cluster=facts(nodes=[node("a", {ALIBABA: "93"})], **fields),
        configured=True,
        server_version=server,
        scheduler_image=(where, image) if image else None,
        built=built,
    )


@pytest.mark.parametrize(
    ("image", "server", "status", "said"),
    [
        pytest.param("registry.k8s.io/kube-scheduler:v1.34.13", "v1.37.2", "fail",
                     "runs kube-scheduler v1.34.13, the API server is v1.37.2: 3 minor versions older",
                     id="old"),
        pytest.param("registry.k8s.io/kube-scheduler:v1.38.1", "v1.37.2", "fail",
                     "must not be newer than the API server", id="newer"),
        pytest.param("registry.k8s.io/kube-scheduler:v1.37.0", "v1.37.2", "ok",
                     "runs kube-scheduler v1.37.0, the API server is v1.37.2", id="same-minor"),
        pytest.param("registry.k8s.io/kube-scheduler:v1.36.4", "v1.37.2-eks-1", "ok",
                     "(one minor older: supported; upgrade it with the control plane)", id="one-older"),
        pytest.param("mirror.example/kube-scheduler:stable", "v1.37.2", "warn", "whose tag names no version",
                     id="no-version-tag"),
    ],
)  # fmt: skip
def test_the_scheduler_image_against_the_api_server(image: str, server: str, status: str, said: str) -> None:
    (finding,) = [f for f in check_cluster(precheck_facts(image, server)) if f.check == "scheduler-version"]
    assert finding.status == status and said in finding.message, finding
    if status != "ok":
        repository = image_repository(image)
        assert f"kustomize edit set image {repository}={repository}:v1.37.2" in finding.hint
        assert f"--set scheduler.image={repository}:v1.37.2" in finding.hint


def test_no_build_skips_the_version_and_a_build_without_scheduler_warns() -> None:
    checks = {f.check: f for f in check_cluster(precheck_facts(None, built=False))}
    assert checks["scheduler-version"].status == "skipped"
    assert (
        checks["scheduler-version"].message == "no built manifests (-f) to compare: the API server is v1.37.2"
    )
    checks = {f.check: f for f in check_cluster(precheck_facts(None))}
    assert checks["scheduler-version"].status == "warn"
    unread = precheck_facts("r.example/kube-scheduler:v1.37.2", server="", unreadable={"version": "403 x"})
    checks = {f.check: f for f in check_cluster(unread)}
    assert checks["scheduler-version"].message == "cannot check: version: 403 x"


def test_an_unloadable_configuration_skips_the_checks_that_need_it() -> None:
    judged = PrecheckFacts(
        cluster=facts(), configured=False, server_version="v1.37.2", scheduler_image=None, built=False
    )
    assert [(f.check, f.status) for f in check_cluster(judged)] == [
        ("sgx-nodes", "skipped"),
        ("pod-security", "skipped"),
        ("scheduler-version", "skipped"),
    ]


def test_the_scheduler_image_is_found_in_a_build() -> None:
    other = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "r.example/confidential-pods:1"}]}}}}  # fmt: skip
    found = scheduler_image([other, scheduler_deployment("registry.k8s.io/kube-scheduler:v1.34.13")])
    assert found == (
        "Deployment confidential-scheduler, container kube-scheduler",
        "registry.k8s.io/kube-scheduler:v1.34.13",
    )
    # a renamed container is still recognised by its image
    renamed = scheduler_image([scheduler_deployment("mirror.example/k8s/kube-scheduler:v1.37.2", "sched")])
    assert renamed is not None and renamed[1] == "mirror.example/k8s/kube-scheduler:v1.37.2"
    assert scheduler_image([other]) is None


OPTED_IN = {"confidential-pods.io/injection": "enabled"}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.mark.parametrize(
    ("stored", "built", "clashing"),
    [
        pytest.param([namespace("shop", **OPTED_IN, **RESTRICTED)], [], "shop (restricted)", id="stored"),
        pytest.param(
            [namespace("shop", **RESTRICTED)], [namespace("shop", **OPTED_IN)], "shop (restricted)",
            id="the-build-opts-a-restricted-namespace-in",
        ),
        pytest.param(
            [], [namespace("new", **OPTED_IN, **{"pod-security.kubernetes.io/enforce": "baseline"})],
            "new (baseline)", id="a-new-namespace-in-the-build",
        ),
        pytest.param([namespace("shop", **OPTED_IN)], [namespace("shop", **RESTRICTED)], "shop (restricted)",
                     id="the-build-restricts-an-opted-in-namespace"),
        pytest.param([namespace("shop", **RESTRICTED)], [], None, id="not-opted-in"),
    ],
)  # fmt: skip
def test_opted_in_namespaces_that_refuse_host_mode(
    stored: list[dict[str, Any]], built: list[dict[str, Any]], clashing: str | None
) -> None:
    namespaces = with_built_namespaces(stored, built)
    host = PrecheckFacts(
        cluster=facts(namespaces=namespaces),  # aesm: host, the default
        configured=True,
        server_version="v1.37.2",
        scheduler_image=None,
        built=False,
    )
    (finding,) = [f for f in check_cluster(host) if f.check == "pod-security"]
    if clashing is None:
        assert finding.status == "ok", finding
    else:
        assert finding.status == "warn" and finding.message.endswith(f": {clashing}"), finding
    # without host mode, nothing injected is refused
    sidecar = PrecheckFacts(
        cluster=facts({"aesm": "sidecar", "aesmSidecarImage": "r.example/aesmd:1"}, namespaces=namespaces),
        configured=True,
        server_version="v1.37.2",
        scheduler_image=None,
        built=False,
    )
    (finding,) = [f for f in check_cluster(sidecar) if f.check == "pod-security"]
    assert finding.status == "ok"


@pytest.mark.parametrize(
    ("config", "said"),
    [
        pytest.param(
            {"runtimeClass": "runv", "aesmSidecarImage": "r.example/aesmd:1"},
            "runtimeClass runv is a sandbox: an aesmd sidecar serves the AESM socket",
            id="sandbox-as-the-alibaba-overlay",
        ),
        pytest.param(
            {"quote": "in-process", "dcap": {"pccsUrl": "https://pccs.example/sgx/certification/v4/"}},
            "quote is in-process",
            id="in-process",
        ),
    ],
)
def test_no_pod_security_warning_where_the_webhook_injects_no_host_path(
    config: dict[str, Any], said: str
) -> None:
    """aesm: host is only the default for pods that quote through aesmd outside a sandbox: the webhook gives
    a sandboxed pod an aesmd sidecar (and an in-process quoter no socket), which restricted admits."""
    judged = PrecheckFacts(
        cluster=facts({"aesm": "host", **config}, namespaces=[namespace("shop", **OPTED_IN, **RESTRICTED)]),
        configured=True,
        server_version="v1.37.2",
        scheduler_image=None,
        built=False,
    )
    (finding,) = [f for f in check_cluster(judged) if f.check == "pod-security"]
    assert finding.status == "ok" and said in finding.message, finding
