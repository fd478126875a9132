"""Fixtures for the e2e suite: a real etcd + kube-apiserver + kube-scheduler for the whole session.

The e2e tests (``@pytest.mark.e2e``) run in every ``python -m pytest`` once the control plane is built
(``tests/e2e/build.sh``); without it they skip with a message saying what to install, or fail when e2e is
required (``.ci/run``; see tests/e2e/gate.py). Process logs go to ``$E2E_LOG_DIR`` or
``.cache/e2e-logs/<time>/``; the directory is kept when an e2e test fails (its path is added to the failure
report) and removed otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e import gate
from tests.e2e.harness import REPO_ROOT, ControlPlane
from tests.e2e.kube import JSON, ApiError, Kube, create_namespace, create_node, delete_pod, delete_pods
from tests.e2e.processes import HarnessError, Process
from tests.e2e.product import Installation, install

LOG_DIR_ENV = "E2E_LOG_DIR"
_failed_key = pytest.StashKey[bool]()
_log_dir_key = pytest.StashKey[Path]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and item.get_closest_marker("e2e") is not None:
        item.config.stash[_failed_key] = True
        log_dir = item.config.stash.get(_log_dir_key, None)
        if log_dir is not None and log_dir.is_dir() and any(log_dir.iterdir()):
            report.sections.append(("e2e process logs", f"kept in {log_dir}"))
    return report


@pytest.fixture(scope="session")
def e2e_log_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Directory every control-plane process logs into; kept if an e2e test failed, removed otherwise."""
    configured = os.environ.get(LOG_DIR_ENV)
    if configured:
        log_dir = Path(configured)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        log_dir = REPO_ROOT / ".cache" / "e2e-logs" / f"{stamp}-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    request.config.stash[_log_dir_key] = log_dir
    yield log_dir
    if configured or (request.config.stash.get(_failed_key, False) and any(log_dir.iterdir())):
        print(f"\ne2e: process logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, e2e_log_dir: Path) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for the session (skips, or fails when required, without the binaries)."""
    binaries = gate.binaries(request.config)
    with tempfile.TemporaryDirectory(prefix="e2e-controlplane-") as workdir:
        try:
            with ControlPlane.run(binaries, Path(workdir), e2e_log_dir) as plane:
                yield plane
        except HarnessError:
            request.config.stash[_failed_key] = True
            raise


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    """An admin (system:masters) JSON client of the session's apiserver."""
    return control_plane.api.admin_client()


@pytest.fixture(scope="session")
def default_scheduler(control_plane: ControlPlane) -> Iterator[Process]:
    """kube-scheduler with the default profile (default-scheduler), for the session."""
    process = control_plane.start_scheduler(name="kube-scheduler-default")
    yield process
    process.stop()


@pytest.fixture
def make_namespace(kube: Kube) -> Iterator[Callable[..., str]]:
    """Factory ``make_namespace(labels=None)``: a fresh namespace with its default ServiceAccount, its name.

    Namespaces never finish deleting here (no namespace controller), so every one has a new name, and after
    the test its pods are deleted (grace 0) and the labels it was given are taken back. A pod left Pending
    would otherwise be scheduled by the shared kube-scheduler onto the next test's node and hold EPC there;
    a namespace left opted in would be counted by the next test's cluster-wide checks (the doctor lists five
    restricted namespaces and says "and N more").
    """
    created: dict[str, list[str]] = {}

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        create_namespace(kube, name, labels=labels)
        created[name] = list(labels or ())
        return name

    yield make
    for name, labels in created.items():
        delete_pods(kube, name)
        if labels:
            kube.patch(f"/api/v1/namespaces/{name}", {"metadata": {"labels": dict.fromkeys(labels)}})


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    """A fresh namespace for the test."""
    return make_namespace()


@pytest.fixture
def make_node(kube: Kube) -> Iterator[Callable[..., JSON]]:
    """Factory ``make_node(allocatable, name=None, labels=None)``: a Ready Node, deleted after the test.

    A pod an earlier test left unbound would be placed on this test's nodes: none may be stored.
    """
    unbound = kube.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName="})["items"]
    assert not unbound, "pods left unbound by an earlier test: " + ", ".join(
        f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in unbound
    )
    created: list[str] = []

    def make(
        allocatable: dict[str, str], name: str | None = None, labels: dict[str, str] | None = None
    ) -> JSON:
        node_name = name or f"e2e-node-{uuid.uuid4().hex[:8]}"
        node = create_node(kube, node_name, allocatable, labels=labels)
        created.append(node_name)
        return node

    yield make
    for node_name in created:
        try:
            kube.delete(f"/api/v1/nodes/{node_name}")
        except ApiError as exc:
            if exc.status != 404:
                raise


#: The overlays of manifests/ the product tests run against, one after the other: one per resource profile
#: the manifests ship (alibaba: ACK with runV; intel: Intel's device plugin; azure: AKS confidential nodes),
#: each as shipped (native mode) and with its ledger-mode component (``+ledger``; docs/extender.md "Modes").
OVERLAYS = ("alibaba", "intel", "azure", "alibaba+ledger", "intel+ledger", "azure+ledger")


@pytest.fixture(scope="session", params=OVERLAYS)
def installation(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    e2e_log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installation]:
    """confidential-pods installed from one overlay: webhook, extender, scheduler (see product.py).

    Parametrized by overlay at session scope: pytest runs every test of one overlay, uninstalls it, then
    installs the next.
    """
    overlay = str(request.param)
    workdir = tmp_path_factory.mktemp(f"install-{overlay}")
    with install(control_plane, overlay, workdir, e2e_log_dir / overlay) as installed:
        yield installed


@pytest.fixture
def pods(kube: Kube, namespace: str) -> Iterator[Callable[..., JSON]]:
    """Factory ``pods(manifest, namespace=<the test's>)``: create a pod; all are deleted (grace 0) after."""
    created: list[tuple[str, str]] = []

    def create(manifest: JSON, namespace: str = namespace) -> JSON:
        pod = kube.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
        created.append((namespace, pod["metadata"]["name"]))
        return pod

    yield create
    for pod_namespace, name in created:
        delete_pod(kube, pod_namespace, name)
