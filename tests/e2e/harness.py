"""A real control plane on 127.0.0.1 for the e2e suite: etcd, kube-apiserver and kube-scheduler processes.

The binaries come from ``tests/e2e/build.sh`` (docs/e2e.md). Every process listens on 127.0.0.1 on free
ports, writes its output to ``<log_dir>/<name>.log`` and is stopped (SIGTERM, then SIGKILL) by
:meth:`ControlPlane.stop`.

The apiserver runs the way a cluster's does where it matters to us: real TLS (a throwaway CA, see
:mod:`tests.e2e.pki`), client-certificate authentication, Node and RBAC authorization, service-account
tokens, the default admission plugins including NodeRestriction, ServiceAccount, RuntimeClass,
MutatingAdmissionWebhook and ValidatingAdmissionWebhook, and a client certificate for kubelets (logs, exec) so
a real node (:mod:`tests.e2e.node`) can join. There is no kube-controller-manager, hence deliberate changes:

- ``TaintNodesByCondition`` is disabled: it taints every new Node ``node.kubernetes.io/not-ready:NoSchedule``
  and only the node lifecycle controller would remove it (kubernetes-sigs/scheduler-plugins' integration tests
  do the same).
- the ServiceAccount plugin stays on, so no controller creates the ``default`` ServiceAccount: the
  harness creates it in ``default`` and ``kube-system``, and :func:`tests.e2e.kube.create_namespace` in
  every namespace it creates.
- ``--endpoint-reconciler-type=none``: the reconciler refuses a loopback advertise address.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.e2e import pki
from tests.e2e.kube import ApiError, Kube, ensure_service_account
from tests.e2e.processes import HarnessError, Process, StartupError, wait_until
from tests.machine import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = Path(__file__).resolve().parent / "controlplane"
BUILD_SCRIPT = "tests/e2e/build.sh"
#: Overrides where the binaries are looked up (build.sh writes there too).
BIN_DIR_ENV = "E2E_BIN_DIR"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
#: First address of SERVICE_CLUSTER_IP_RANGE: the in-cluster ``kubernetes`` Service, in the serving cert.
KUBERNETES_SERVICE_IP = "10.0.0.1"
#: Admission plugins named on the command line on top of the release's default set (they are in it
#: already; naming them makes the harness fail loudly if a release drops one).
ENABLED_ADMISSION_PLUGINS = (
    "NodeRestriction",
    "ServiceAccount",
    "RuntimeClass",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
)
DISABLED_ADMISSION_PLUGINS = ("TaintNodesByCondition",)
#: Logged by kube-scheduler at -v=3 once its informers and event handlers have synced, just before it
#: starts scheduling (cmd/kube-scheduler/app/server.go). With --secure-port=0 there is no /readyz.
SCHEDULER_READY_LINE = '"Handlers synced"'
#: The user kube-scheduler authenticates as on a cluster; bootstrap RBAC binds system:kube-scheduler to it.
SCHEDULER_USER = "system:kube-scheduler"
#: How the apiserver authorizes: the Node authorizer first (a kubelet, user ``system:node:<name>`` in group
#: ``system:nodes``, may read and write only what its pods need; the NodeRestriction admission plugin limits
#: its writes to its own Node and pods), then RBAC, as kubeadm configures it.
AUTHORIZATION_MODES = ("Node", "RBAC")
#: The apiserver's identity towards kubelets (logs, exec, port-forward): group system:masters, so a kubelet's
#: webhook authorization (a SubjectAccessReview) allows it, as kubeadm's ``apiserver-kubelet-client`` is.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
#: Ports are picked free, then bound by another process: a rare race, retried this many times.
START_ATTEMPTS = 3

_T = TypeVar("_T")


class BinariesMissingError(HarnessError):
    """The control-plane binaries have not been built (run tests/e2e/build.sh)."""


def pinned_kubernetes_version() -> str:
    """The Kubernetes release the control-plane Go module pins (``v1.X.Y``)."""
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", (MODULE_DIR / "go.mod").read_text(), re.MULTILINE)
    if match is None:
        raise HarnessError(f"no k8s.io/kubernetes requirement in {MODULE_DIR / 'go.mod'}")
    return match.group(1)


def default_bin_dir() -> Path:
    """Where build.sh puts the binaries: ``$E2E_BIN_DIR`` or ``.cache/e2e-bin/<version>`` in the repo."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Path(override)
    return REPO_ROOT / ".cache" / "e2e-bin" / pinned_kubernetes_version()


@dataclass(frozen=True)
class Binaries:
    """Paths of the three control-plane executables."""

    etcd: Path
    kube_apiserver: Path
    kube_scheduler: Path

    @classmethod
    def locate(cls, bin_dir: Path | None = None) -> Binaries:
        """Find the binaries, or raise :class:`BinariesMissingError` saying how to build them."""
        directory = bin_dir if bin_dir is not None else default_bin_dir()
        found = cls(
            etcd=directory / "etcd",
            kube_apiserver=directory / "kube-apiserver",
            kube_scheduler=directory / "kube-scheduler",
        )
        missing = [p.name for p in (found.etcd, found.kube_apiserver, found.kube_scheduler) if not _is_exe(p)]
        if missing:
            raise BinariesMissingError(
                f"control-plane binaries missing in {directory}: {', '.join(missing)}; "
                f"run {BUILD_SCRIPT} (needs Go, see docs/e2e.md)"
            )
        return found


def _is_exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class Etcd:
    """A single-member etcd on 127.0.0.1."""

    process: Process
    client_url: str


def start_etcd(binaries: Binaries, workdir: Path, log_dir: Path, *, timeout: float = 60.0) -> Etcd:
    """Start etcd (``--unsafe-no-fsync``: test data only) and wait until ``/health`` says true."""
    client_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="etcd-data-", dir=workdir))
    args = (
        str(binaries.etcd),
        "--name=e2e",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=e2e={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    )
    process = Process.start("etcd", args, log_dir)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    _wait_ready(process, healthy, timeout, f"etcd /health at {client_url}")
    return Etcd(process=process, client_url=client_url)


@dataclass(frozen=True)
class ApiServer:
    """A kube-apiserver on 127.0.0.1 with its PKI and an admin kubeconfig."""

    process: Process
    url: str
    ca: pki.CertificateAuthority
    admin: pki.CertFiles
    service_account_keys: pki.CertFiles
    admin_kubeconfig: Path

    workdir: Path

    def admin_client(self) -> Kube:
        """A JSON client authenticated as ``admin`` (group ``system:masters``)."""
        return Kube(self.url, ca=self.ca.files.cert, cert=self.admin.cert, key=self.admin.key)

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for ``user`` (in ``groups``) with a client certificate from the cluster CA.

        E.g. ``system:kube-scheduler``, which the apiserver's bootstrap RBAC grants what a scheduler needs.
        """
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        files = self.ca.issue(self.workdir / "pki", stem, common_name=user, organizations=groups, client=True)
        return write_kubeconfig(
            self.workdir / f"{stem}.kubeconfig",
            server=self.url,
            ca=self.ca.files.cert,
            cert=files.cert,
            key=files.key,
            user=user,
        )

    def service_account_kubeconfig(self, namespace: str, name: str, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig with a bound token (TokenRequest) of ServiceAccount ``namespace/name``.

        The account must exist; what it may do is whatever RBAC grants it (least privilege, proven).
        """
        token = self.admin_client().create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )["status"]["token"]
        return write_kubeconfig(
            self.workdir / f"sa-{namespace}-{name}.kubeconfig",
            server=self.url,
            ca=self.ca.files.cert,
            token=str(token),
            user=f"system:serviceaccount:{namespace}:{name}",
        )


def start_apiserver(
    binaries: Binaries,
    etcd: Etcd,
    workdir: Path,
    log_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> ApiServer:
    """Start kube-apiserver against ``etcd`` and wait for ``/readyz``; write ``admin.kubeconfig``."""
    pki_dir = workdir / "pki"
    ca = pki.CertificateAuthority.create(pki_dir)
    serving = ca.issue(
        pki_dir,
        "apiserver",
        common_name="kube-apiserver",
        dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP),
        server=True,
    )
    admin = ca.issue(pki_dir, "admin", common_name="admin", organizations=("system:masters",), client=True)
    kubelet_client = ca.issue(
        pki_dir,
        "apiserver-kubelet-client",
        common_name=KUBELET_CLIENT_USER,
        organizations=("system:masters",),
        client=True,
    )
    sa_keys = pki.write_service_account_keys(pki_dir)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    args = (
        str(binaries.kube_apiserver),
        f"--etcd-servers={etcd.client_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The endpoint reconciler refuses a loopback advertise address; nothing here reaches the apiserver
        # through the in-cluster ``kubernetes`` Service, so its Endpoints are not maintained.
        "--endpoint-reconciler-type=none",
        f"--secure-port={port}",
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={ca.files.cert}",
        f"--authorization-mode={','.join(AUTHORIZATION_MODES)}",
        f"--kubelet-client-certificate={kubelet_client.cert}",
        f"--kubelet-client-key={kubelet_client.key}",
        # A node's InternalIP, never its name: there is no DNS for node names here (tests/e2e/node.py).
        "--kubelet-preferred-address-types=InternalIP",
        "--anonymous-auth=false",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        f"--service-account-issuer={url}",
        f"--service-account-key-file={sa_keys.cert}",
        f"--service-account-signing-key-file={sa_keys.key}",
        f"--enable-admission-plugins={','.join(ENABLED_ADMISSION_PLUGINS)}",
        f"--disable-admission-plugins={','.join(DISABLED_ADMISSION_PLUGINS)}",
        *extra_args,
    )
    process = Process.start("kube-apiserver", args, log_dir)
    server = ApiServer(
        process=process,
        url=url,
        ca=ca,
        admin=admin,
        service_account_keys=sa_keys,
        workdir=workdir,
        admin_kubeconfig=write_kubeconfig(
            workdir / "admin.kubeconfig", server=url, ca=ca.files.cert, cert=admin.cert, key=admin.key
        ),
    )
    kube = server.admin_client()

    def ready() -> bool:
        try:
            return kube.get_text("/readyz") == "ok"
        except (ApiError, OSError):
            return False

    _wait_ready(process, ready, timeout, f"kube-apiserver /readyz at {url}")
    # No kube-controller-manager: create what its ServiceAccount controller would, for the namespaces that
    # exist from the start (the apiserver creates them itself, shortly after it turns ready).
    for namespace in ("default", "kube-system"):
        _wait_ready(
            process,
            lambda ns=namespace: _try_service_account(kube, ns),  # type: ignore[misc]
            timeout,
            f"namespace {namespace} and its default ServiceAccount",
        )
    return server


def _try_service_account(kube: Kube, namespace: str) -> bool:
    try:
        ensure_service_account(kube, namespace, "default")
    except ApiError as exc:
        if exc.status == 404:  # namespace not created yet
            return False
        raise
    return True


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    user: str = "admin",
) -> Path:
    """Write a kubeconfig for ``server`` with a client certificate or a bearer token; returns ``path``."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials["token"] = token
    if not credentials:
        raise HarnessError("a kubeconfig needs a client certificate and key, or a token")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def start_scheduler(
    binaries: Binaries,
    kubeconfig: Path,
    workdir: Path,
    log_dir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    name: str = "kube-scheduler",
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> Process:
    """Start kube-scheduler from a KubeSchedulerConfiguration (default profile if ``config`` is None).

    ``clientConnection.kubeconfig`` is set to ``kubeconfig``; leader election and the secure port are off.
    Waits until the scheduler has synced its informers and is about to schedule (the line it logs at -v=3:
    keep ``extra_args`` from lowering the verbosity).
    """
    document: dict[str, Any] = json.loads(json.dumps(config)) if config is not None else {}
    document.setdefault("apiVersion", "kubescheduler.config.k8s.io/v1")
    document.setdefault("kind", "KubeSchedulerConfiguration")
    document.setdefault("clientConnection", {})["kubeconfig"] = str(kubeconfig)
    document.setdefault("leaderElection", {})["leaderElect"] = False
    config_path = workdir / f"{name}.config.yaml"
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    args = (
        str(binaries.kube_scheduler),
        f"--config={config_path}",
        "--leader-elect=false",
        "--secure-port=0",
        "--v=3",
        *extra_args,
    )
    process = Process.start(name, args, log_dir)

    def synced() -> bool:
        return SCHEDULER_READY_LINE in process.log_text()

    _wait_ready(process, synced, timeout, f"{name} to sync its informers")
    return process


def _wait_ready(process: Process, condition: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        wait_until(condition, timeout=timeout, what=what, alive=process.check_alive)
    except StartupError:
        process.stop()
        raise
    except Exception as exc:
        process.stop()
        raise StartupError(f"{exc}; log {process.log_path}:\n{process.log_tail()}") from exc


def _retry_port_races(start: Callable[[], _T]) -> _T:
    """Call ``start`` again (new free ports) when it failed only because a port was taken meanwhile."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start()
        except StartupError as exc:
            if attempt == START_ATTEMPTS or "address already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ schedulers) started together and stopped in reverse order.

    Use :meth:`run` as a context manager (a pytest session fixture wraps it): everything started inside is
    stopped on the way out, also when starting fails half-way.
    """

    binaries: Binaries
    workdir: Path
    log_dir: Path
    etcd: Etcd | None = None
    apiserver: ApiServer | None = None
    processes: list[Process] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def run(
        cls, binaries: Binaries, workdir: Path, log_dir: Path, *, apiserver_args: Sequence[str] = ()
    ) -> Iterator[ControlPlane]:
        """Start etcd and kube-apiserver; yield the control plane; stop every process it started."""
        plane = cls(binaries=binaries, workdir=workdir, log_dir=log_dir)
        try:
            plane.etcd = _retry_port_races(lambda: start_etcd(binaries, workdir, log_dir))
            plane.processes.append(plane.etcd.process)
            etcd = plane.etcd
            plane.apiserver = _retry_port_races(
                lambda: start_apiserver(binaries, etcd, workdir, log_dir, extra_args=apiserver_args)
            )
            plane.processes.append(plane.apiserver.process)
            yield plane
        finally:
            plane.stop()

    @property
    def api(self) -> ApiServer:
        if self.apiserver is None:
            raise HarnessError("kube-apiserver is not running")
        return self.apiserver

    def start_scheduler(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        name: str = "kube-scheduler",
        kubeconfig: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> Process:
        """Start a kube-scheduler (stopped with the control plane, or earlier with its ``stop()``).

        It connects as ``system:kube-scheduler`` (the identity and bootstrap RBAC of a cluster's scheduler)
        unless another ``kubeconfig`` is given.
        """
        if kubeconfig is None:
            kubeconfig = self.api.user_kubeconfig(SCHEDULER_USER)
        process = start_scheduler(
            self.binaries,
            kubeconfig,
            self.workdir,
            self.log_dir,
            config=config,
            name=name,
            extra_args=extra_args,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stop every process, the last started first."""
        for process in reversed(self.processes):
            process.stop()
