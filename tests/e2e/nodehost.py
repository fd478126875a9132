"""The machine's side of the e2e node: packages it needs, the bridge, mounts, cgroups, leftovers, a lock.

Everything here touches the host (root): :mod:`tests.e2e.node` calls it in order, and :func:`leftovers` is the
check after a teardown that nothing survived.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tests.e2e.nodeconfig import BRIDGE, CNI_BIN_DIR
from tests.e2e.nodeimages import BUSYBOX
from tests.e2e.processes import HarnessError

LOCK_FILE = Path("/run/confidential-pods-e2e-node.lock")
LOCK_TIMEOUT = 1200.0
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


def host_problems() -> list[str]:
    """What keeps this host from running the node: empty when it can."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("the e2e node needs root (containerd, runc, mounts, a bridge)")
    missing = {pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    if any(not (CNI_BIN_DIR / plugin).is_file() for plugin in CNI_PLUGINS):
        missing.add("containernetworking-plugins")
    if BUSYBOX.is_file() and not statically_linked(BUSYBOX):  # Debian's busybox, not busybox-static
        missing.add("busybox-static")
    if missing:
        problems.append(f"missing Debian packages {', '.join(sorted(missing))}: {APT_INSTALL}")
    return problems


def statically_linked(path: Path) -> bool:
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


def make_stand_in_devices(dev_dir: Path) -> None:
    """``sgx_enclave``, ``sgx_provision`` and ``sgx/{enclave,provision}``: character devices as /dev/null."""
    null = os.stat("/dev/null").st_rdev
    for name in ("sgx_enclave", "sgx_provision", "sgx/enclave", "sgx/provision"):
        path = dev_dir / name
        if not path.exists():
            os.mknod(path, 0o666 | 0o020000, null)  # S_IFCHR
            path.chmod(0o666)


def ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def kill_namespace_members(holder_pid: int) -> None:
    """SIGKILL what still runs in the node's mount namespace besides its holder (runc shims, mostly)."""
    namespace = mount_namespace(holder_pid)
    if namespace is None:
        return
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and int(entry.name) != holder_pid
            and mount_namespace(int(entry.name)) == namespace
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def remove_kubelet_cgroups() -> None:
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
            if marker in cmdline or (namespace and mount_namespace(int(entry.name)) == namespace):
                found.append(f"process {entry.name}: {cmdline.strip()}")
    with Path("/proc/self/mountinfo").open() as mountinfo:
        found += [f"mount {line.split()[4]}" for line in _mounts_of(mountinfo, marker)]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"network interface {BRIDGE}")
    return found


def _mounts_of(mountinfo: IO[str], marker: str) -> list[str]:
    return [line for line in mountinfo if marker in line or " /var/lib/kubelet" in line]


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
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
