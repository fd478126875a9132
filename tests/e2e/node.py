"""A real Kubernetes node for the e2e suite: containerd + runc, a CNI bridge, kubelet, an SGX device plugin.

Joined to the harness's apiserver (:mod:`tests.e2e.harness`) as a kubelet joins a kubeadm cluster: its own
client certificate (user ``system:node:<name>``, group ``system:nodes``) under the Node authorizer and
NodeRestriction. Everything runs as host processes started and stopped by pid (there is no systemd):

- a **mount namespace** of the node's own (a holder process made with ``unshare --mount``): containerd, the
  runc shims, kubelet and the device plugin run in it (``nsenter``), so every mount they make (kubelet's bind
  mount of its root directory, pod volumes, container root filesystems, network-namespace files) lives and
  dies with it and none reaches the host's mount table. In it a test directory is bind-mounted on
  ``/var/lib/kubelet`` (the device-plugin socket directory is fixed at ``/var/lib/kubelet/device-plugins/``)
  and on ``/var/log`` (``/var/log/pods`` and ``/var/log/containers``).
- **containerd** (Debian's 1.6) with a config v2 of the test directory (root, state, socket), CRI settings
  this machine needs (``restrict_oom_score_adj``: the VM withholds CAP_SYS_RESOURCE; no AppArmor; no
  hugetlb controller) and runtime handlers ``kata``, ``kata-qemu``, ``kata-clh`` and ``runv`` that are
  runc: the RuntimeClasses the product injects start pods, though not in a VM (real Kata needs guest
  images that cannot be fetched here).
- **CNI**: Debian's bridge + host-local plugins on a bridge the node creates, ``cpe2e0`` with
  :data:`NODE_IP` in :data:`POD_CIDR`; no gateway route, no masquerading, no IP forwarding: pods reach
  the node and each other, nothing leaves the machine. The node's InternalIP is the bridge address, where
  the apiserver reaches the kubelet for logs and exec.
- **kubelet** built from the pinned module (``tests/e2e/build.sh``), cgroupfs on this cgroup v1 host.
- **sgx-device-plugin** (tests/e2e/controlplane/cmd/sgx-device-plugin) in ``alibaba`` or ``intel`` mode,
  handing out stand-in device nodes (character devices with ``/dev/null``'s numbers) made here.

Only one node runs on a machine at a time (a lock file): the bridge, the pod range and the kubelet's
device-plugin directory are the machine's. :meth:`Node.stop` tears everything down and
:func:`leftovers` says what, if anything, survived.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from tests.e2e.harness import ApiServer, BinariesMissingError, default_bin_dir
from tests.e2e.kube import ApiError, Kube
from tests.e2e.nodeimages import BUSYBOX
from tests.e2e.ociarchive import ImageArchive
from tests.e2e.processes import HarnessError, Process, wait_until
from tests.machine import free_port

BRIDGE = "cpe2e0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
PREFIX_LENGTH = 24
#: RuntimeClass handlers the node's containerd runs with runc (the product's RuntimeClasses use them).
RUNTIME_HANDLERS = ("kata", "kata-qemu", "kata-clh", "runv")
LOCK_FILE = Path("/run/confidential-pods-e2e-node.lock")
LOCK_TIMEOUT = 1200.0
CNI_BIN_DIR = Path("/usr/lib/cni")
#: What the node needs from the host, and the Debian package that has it.
HOST_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "busybox": "busybox-static",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "ip": "iproute2",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback")
APT_INSTALL = (
    "apt-get install -y --no-install-recommends containerd runc containernetworking-plugins busybox-static"
)


class NodeUnavailableError(HarnessError):
    """This host cannot run the e2e node (not root, or a package missing); the message says what to do."""


def host_problems() -> list[str]:
    """What keeps this host from running the node: empty when it can."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("the e2e node needs root (containerd, runc, mounts, a bridge)")
    missing = {pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    if any(not (CNI_BIN_DIR / plugin).is_file() for plugin in CNI_PLUGINS):
        missing.add("containernetworking-plugins")
    if BUSYBOX.is_file() and not _statically_linked(BUSYBOX):  # Debian's busybox, not busybox-static
        missing.add("busybox-static")
    if missing:
        problems.append(f"missing Debian packages {', '.join(sorted(missing))}: {APT_INSTALL}")
    return problems


def _statically_linked(path: Path) -> bool:
    """An x86-64 ELF executable without a PT_INTERP program header (no dynamic loader needed)."""
    with path.open("rb") as binary:
        header = binary.read(64)
        if header[:5] != b"\x7fELF\x02":
            return False
        phoff = int.from_bytes(header[0x20:0x28], "little")
        entry_size = int.from_bytes(header[0x36:0x38], "little")
        count = int.from_bytes(header[0x38:0x3A], "little")
        binary.seek(phoff)
        table = binary.read(entry_size * count)
    pt_interp = 3
    return all(
        int.from_bytes(table[i * entry_size : i * entry_size + 4], "little") != pt_interp
        for i in range(count)
    )


@dataclass(frozen=True)
class NodeBinaries:
    """kubelet, the device plugin and the pause program, from tests/e2e/build.sh."""

    kubelet: Path
    sgx_device_plugin: Path
    pause: Path

    @classmethod
    def locate(cls, bin_dir: Path | None = None) -> NodeBinaries:
        directory = bin_dir if bin_dir is not None else default_bin_dir()
        found = cls(directory / "kubelet", directory / "sgx-device-plugin", directory / "pause")
        missing = [
            p.name for p in (found.kubelet, found.sgx_device_plugin, found.pause) if not os.access(p, os.X_OK)
        ]
        if missing:
            raise BinariesMissingError(
                f"node binaries missing in {directory}: {', '.join(missing)}; run tests/e2e/build.sh"
            )
        return found


@dataclass
class Node:
    """One kubelet node (see the module's docstring). Start with :meth:`run`."""

    name: str
    api: ApiServer
    binaries: NodeBinaries
    workdir: Path
    log_dir: Path
    sandbox_image: str
    #: The Ready condition's message before the CNI configuration was written (why the node was NotReady).
    not_ready_message: str = ""
    holder: Process | None = None
    containerd: Process | None = None
    kubelet: Process | None = None
    plugin: Process | None = None
    #: The node's mount namespace (``mnt:[inode]``), to find what still runs in it after the teardown.
    namespace: str = ""
    _created: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def dev_dir(self) -> Path:
        """Where the stand-in SGX device nodes are (``sgx_enclave``, ``sgx_provision``, ``sgx/``)."""
        return self.workdir / "dev"

    @property
    def kube(self) -> Kube:
        return self.api.admin_client()

    @classmethod
    @contextlib.contextmanager
    def run(
        cls,
        api: ApiServer,
        workdir: Path,
        log_dir: Path,
        *,
        images: Sequence[ImageArchive],
        name: str = "e2e-sgx-node",
    ) -> Iterator[Node]:
        """Start the node with ``images`` imported (the first: the sandbox image); stop it on the way out."""
        problems = host_problems()
        if problems:
            raise NodeUnavailableError("; ".join(problems))
        node = cls(name, api, NodeBinaries.locate(), workdir, log_dir, sandbox_image=images[0].reference)
        with _machine_lock():
            try:
                node._start(images)
                yield node
            finally:
                node.stop()
            left = leftovers(workdir, node.namespace)
            if left:
                raise HarnessError("the e2e node left behind: " + "; ".join(left))

    def _start(self, images: Sequence[ImageArchive]) -> None:
        for directory in ("var-lib-kubelet", "var-log", "containerd", "cni/net.d", "kubelet/pki", "dev/sgx"):
            (self.workdir / directory).mkdir(parents=True, exist_ok=True)
        _make_stand_in_devices(self.dev_dir)
        self._create_bridge()
        self._start_holder()
        self._start_containerd()
        for image in images:
            self.import_image(image)
        self.start_kubelet()
        self.not_ready_message = self._wait_registered()
        self._write_cni_config()
        wait_until(self.ready, timeout=90, what=f"node {self.name} Ready", alive=self._check_alive)

    # --- the pieces -------------------------------------------------------------------------------------

    def _create_bridge(self) -> None:
        _ip("link", "del", BRIDGE, check=False)  # a crashed earlier run's (the lock is ours)
        _ip("link", "add", BRIDGE, "type", "bridge")
        self._created.append("bridge")
        _ip("addr", "add", f"{NODE_IP}/{PREFIX_LENGTH}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")

    def _start_holder(self) -> None:
        kubelet_dir = Path("/var/lib/kubelet")
        if not kubelet_dir.exists():
            kubelet_dir.mkdir(parents=True)
            self._created.append("/var/lib/kubelet")
        script = " && ".join(
            (
                'mount --bind "$1" /var/lib/kubelet',
                'mount --bind "$2" /var/log',
                "echo mounted",
                "exec sleep inf",
            )
        )
        args = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "node-mounts")
        holder = Process.start(
            "node-mounts",
            (*args, str(self.workdir / "var-lib-kubelet"), str(self.workdir / "var-log")),
            self.log_dir,
        )
        self.holder = holder
        wait_until(
            lambda: "mounted" in holder.log_text().splitlines(),
            timeout=10,
            what="the node's mount namespace",
            alive=holder.check_alive,
        )
        self.namespace = _mount_namespace(holder.popen.pid) or ""

    def _in_namespace(self, *args: str) -> tuple[str, ...]:
        assert self.holder is not None
        return ("nsenter", f"--mount=/proc/{self.holder.popen.pid}/ns/mnt", "--", *args)

    def _start_containerd(self) -> None:
        config = self.workdir / "containerd" / "config.toml"
        config.write_text(containerd_config(self.workdir, self.sandbox_image))
        self.containerd = Process.start(
            "containerd", self._in_namespace("containerd", f"--config={config}"), self.log_dir
        )
        process = self.containerd
        wait_until(lambda: self._ctr_ok("version"), timeout=30, what="containerd", alive=process.check_alive)

    def ctr(self, *args: str, timeout: float = 120) -> str:
        """Run ``ctr`` against the node's containerd, namespace ``k8s.io`` (the CRI's); its output."""
        done = subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise HarnessError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _ctr_ok(self, *args: str) -> bool:
        try:
            self.ctr(*args, timeout=10)
        except (HarnessError, subprocess.TimeoutExpired):
            return False
        return True

    def import_image(self, image: ImageArchive) -> None:
        """Load a docker-archive tarball into the node's containerd, where the CRI finds it."""
        self.ctr("images", "import", str(image.path))

    def start_kubelet(self) -> None:
        """Start (or restart) the kubelet; it registers the Node, or finds it registered."""
        kubelet_dir = self.workdir / "kubelet"
        kubeconfig = self.api.user_kubeconfig(f"system:node:{self.name}", ("system:nodes",))
        config = kubelet_dir / "config.yaml"
        if not config.exists():
            config.write_text(
                yaml.safe_dump(kubelet_config(self.api.ca.files.cert, self.socket), sort_keys=False)
            )
        args = self._in_namespace(
            str(self.binaries.kubelet),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            "--root-dir=/var/lib/kubelet",
            f"--cert-dir={kubelet_dir / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={NODE_IP}",
            "--v=2",
        )
        self.kubelet = Process.start("kubelet", args, self.log_dir)

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()

    def _wait_registered(self) -> str:
        reason: list[str] = []

        def registered() -> bool:
            try:
                node = self.kube.get(f"/api/v1/nodes/{self.name}")
            except ApiError:
                return False
            ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            reason[:] = [str(ready[0].get("message", ""))] if ready else []
            return bool(ready)

        wait_until(
            registered, timeout=90, what=f"kubelet to register node {self.name}", alive=self._check_alive
        )
        return reason[0]

    def _write_cni_config(self) -> None:
        conflist = {
            "cniVersion": "1.0.0",
            "name": "e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (self.workdir / "cni" / "net.d" / "10-e2e.conflist").write_text(json.dumps(conflist, indent=2))

    def ready(self) -> bool:
        """The Node's Ready condition is True."""
        node = self.kube.get(f"/api/v1/nodes/{self.name}")
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
        )

    def _check_alive(self) -> None:
        for process in (self.holder, self.containerd, self.kubelet):
            if process is not None:
                process.check_alive()

    def start_device_plugin(self, mode: str, *args: str) -> Process:
        """Start sgx-device-plugin ``--mode=mode`` on the stand-in devices (stopping one already running)."""
        self.stop_device_plugin()
        command = self._in_namespace(
            str(self.binaries.sgx_device_plugin), f"--mode={mode}", f"--dev-dir={self.dev_dir}", *args
        )
        self.plugin = Process.start("sgx-device-plugin", command, self.log_dir)
        plugin = self.plugin
        wait_until(
            lambda: "registered with" in plugin.log_text(),
            timeout=30,
            what="the device plugin to register",
            alive=plugin.check_alive,
        )
        return plugin

    def stop_device_plugin(self) -> None:
        if self.plugin is not None:
            self.plugin.stop()
            self.plugin = None

    # --- teardown ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear it all down: pods, device plugin, kubelet, containers, containerd, mounts, bridge, Node."""
        self.stop_device_plugin()
        with contextlib.suppress(ApiError, OSError):
            self._delete_pods()
        self.stop_kubelet()
        if self.containerd is not None and self.containerd.alive:
            self._remove_containers()
            self.containerd.stop()
        if self.holder is not None:
            _kill_namespace_members(self.holder.popen.pid)
            self.holder.stop()
        if "bridge" in self._created:
            _ip("link", "del", BRIDGE, check=False)
        if "/var/lib/kubelet" in self._created:
            with contextlib.suppress(OSError):
                Path("/var/lib/kubelet").rmdir()
        _remove_kubelet_cgroups()
        with contextlib.suppress(ApiError, OSError):
            self.kube.delete(f"/api/v1/nodes/{self.name}")

    def _delete_pods(self) -> None:
        """Delete the node's pods and give the kubelet a moment to stop their sandboxes (CNI DEL)."""
        selector = {"fieldSelector": f"spec.nodeName={self.name}"}
        for pod in self.kube.get("/api/v1/pods", params=selector)["items"]:
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                self.kube.delete(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", grace_period_seconds=0
                )
        if self.kubelet is not None and self.kubelet.alive:
            with contextlib.suppress(HarnessError):
                wait_until(
                    lambda: not self.ctr("tasks", "ls", "-q").split(), timeout=30, what="pods' tasks to stop"
                )

    def _remove_containers(self) -> None:
        with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
            for task in self.ctr("tasks", "ls", "-q").split():
                with contextlib.suppress(HarnessError):
                    self.ctr("tasks", "kill", "--signal=SIGKILL", task)
                with contextlib.suppress(HarnessError):
                    self.ctr("tasks", "delete", "--force", task)
            for container in self.ctr("containers", "ls", "-q").split():
                with contextlib.suppress(HarnessError):
                    self.ctr("containers", "delete", container)


def containerd_config(workdir: Path, sandbox_image: str) -> str:
    """containerd's config v2 for the node: everything under ``workdir``, the CRI as this machine needs it."""
    base = workdir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "version = 2",
        f"root = {json.dumps(str(base / 'root'))}",
        f"state = {json.dumps(str(base / 'state'))}",
        "[grpc]",
        f"  address = {json.dumps(str(base / 'containerd.sock'))}",
        "[ttrpc]",
        f"  address = {json.dumps(str(base / 'containerd.sock.ttrpc'))}",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {json.dumps(str(base / 'opt'))}",
        f"[{cri}]",
        f"  sandbox_image = {json.dumps(sandbox_image)}",
        "  restrict_oom_score_adj = true  # the VM withholds CAP_SYS_RESOURCE",
        "  disable_apparmor = true",
        "  tolerate_missing_hugepages_controller = true",
        "  netns_mounts_under_state_dir = true",
        f"[{cri}.cni]",
        f"  bin_dir = {json.dumps(str(CNI_BIN_DIR))}",
        f"  conf_dir = {json.dumps(str(workdir / 'cni' / 'net.d'))}",
        "  max_conf_num = 1",
        f"[{cri}.containerd]",
        '  default_runtime_name = "runc"',
    ]
    for handler in ("runc", *RUNTIME_HANDLERS):
        lines += [
            f"[{cri}.containerd.runtimes.{json.dumps(handler)}]",
            '  runtime_type = "io.containerd.runc.v2"',
        ]
    return "\n".join(lines) + "\n"


def kubelet_config(client_ca: Path, containerd_socket: Path) -> dict[str, object]:
    """The KubeletConfiguration: cgroup v1 with cgroupfs, x509 + webhook auth, no eviction or image GC."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "resolvConf": "",
        "localStorageCapacityIsolation": False,
        # The images cannot be pulled again: never collect them; no disk-pressure evictions on a CI disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "0%", "imagefs.available": "0%"},
    }


def _make_stand_in_devices(dev_dir: Path) -> None:
    """``sgx_enclave``, ``sgx_provision`` and ``sgx/{enclave,provision}``: character devices as /dev/null."""
    null = os.stat("/dev/null").st_rdev
    for name in ("sgx_enclave", "sgx_provision", "sgx/enclave", "sgx/provision"):
        path = dev_dir / name
        if not path.exists():
            os.mknod(path, 0o666 | 0o020000, null)  # S_IFCHR
            path.chmod(0o666)


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _kill_namespace_members(holder_pid: int) -> None:
    """SIGKILL what still runs in the node's mount namespace besides its holder (runc shims, mostly)."""
    namespace = _mount_namespace(holder_pid)
    if namespace is None:
        return
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and int(entry.name) != holder_pid
            and _mount_namespace(int(entry.name)) == namespace
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _remove_kubelet_cgroups() -> None:
    """Remove the (empty) cgroups kubelet made under each cgroup v1 hierarchy: ``kubepods`` and below."""
    for top in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for current, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                Path(current).rmdir()


def leftovers(workdir: Path, namespace: str) -> list[str]:
    """What of a stopped node is still there: processes (named for its files, or in its mount namespace),
    mounts of its files or of /var/lib/kubelet, the bridge. Empty when all is gone."""
    found: list[str] = []
    marker = str(workdir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmdline or (namespace and _mount_namespace(int(entry.name)) == namespace):
                found.append(f"process {entry.name}: {cmdline.strip()}")
    with Path("/proc/self/mountinfo").open() as mountinfo:
        found += [f"mount {line.split()[4]}" for line in _mounts_of(mountinfo, marker)]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"network interface {BRIDGE}")
    return found


def _mounts_of(mountinfo: IO[str], marker: str) -> list[str]:
    return [line for line in mountinfo if marker in line or " /var/lib/kubelet" in line]


def publish_root_ca(kube: Kube, namespace: str, ca: Path) -> None:
    """Create ``kube-root-ca.crt`` in ``namespace``, as kube-controller-manager's root-ca-cert-publisher does.

    Every pod's service-account token volume projects it: without it the kubelet cannot mount the volume.
    """
    try:
        kube.create(
            f"/api/v1/namespaces/{namespace}/configmaps",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt"},
                "data": {"ca.crt": ca.read_text()},
            },
        )
    except ApiError as exc:
        if exc.status != 409:
            raise


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One e2e node per machine at a time: wait for another run's node to finish."""
    with LOCK_FILE.open("a") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"another e2e node held {LOCK_FILE} for {LOCK_TIMEOUT:.0f}s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
