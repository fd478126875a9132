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

Beside it: :mod:`tests.e2e.nodeconfig` (the files the daemons read), :mod:`tests.e2e.nodehost` (the host's
side: packages, bridge, mount namespace members, cgroups, :func:`~tests.e2e.nodehost.leftovers`, the lock) and
:mod:`tests.e2e.nodeimages` (pause and busybox).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.e2e.harness import ApiServer, BinariesMissingError, default_bin_dir
from tests.e2e.kube import ApiError, Kube
from tests.e2e.nodeconfig import (
    BRIDGE,
    NODE_IP,
    PREFIX_LENGTH,
    cni_conflist,
    containerd_config,
    kubelet_config,
)
from tests.e2e.nodehost import (
    host_problems,
    ip,
    kill_namespace_members,
    leftovers,
    machine_lock,
    make_stand_in_devices,
    mount_namespace,
    remove_kubelet_cgroups,
)
from tests.e2e.ociarchive import ImageArchive
from tests.e2e.processes import HarnessError, Process, wait_until


class NodeUnavailableError(HarnessError):
    """This host cannot run the e2e node (not root, or a package missing); the message says what to do."""


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
        with machine_lock():
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
        make_stand_in_devices(self.dev_dir)
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
        ip("link", "del", BRIDGE, check=False)  # a crashed earlier run's (the lock is ours)
        ip("link", "add", BRIDGE, "type", "bridge")
        self._created.append("bridge")
        ip("addr", "add", f"{NODE_IP}/{PREFIX_LENGTH}", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")

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
        self.namespace = mount_namespace(holder.popen.pid) or ""

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
        conflist = cni_conflist(self.workdir / "cni" / "ipam")
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
            kill_namespace_members(self.holder.popen.pid)
            self.holder.stop()
        if "bridge" in self._created:
            ip("link", "del", BRIDGE, check=False)
        if "/var/lib/kubelet" in self._created:
            with contextlib.suppress(OSError):
                Path("/var/lib/kubelet").rmdir()
        remove_kubelet_cgroups()
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
