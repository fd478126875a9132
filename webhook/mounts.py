"""The volumes and mounts the webhook injects, and the pod's own volumes and mounts checked against them.

The webhook mounts two things into containers: the AESM socket directory (``/var/run/aesmd``: the node's,
a hostPath, or the pod's in-memory emptyDir shared with an aesmd sidecar) and the quote library's
configuration (one file, a ``subPath`` of a downward-API volume). What the pod brings may not redirect them:

- The webhook's volumes have names of their own (prefix ``confidential-pods-``), and it never takes a pod's
  volume for one of them by name. A pod volume with a reserved name is accepted only when it is exactly the
  volume the webhook writes (its own output read again: a manifest ``inject`` wrote, its status marker
  removed); a mount of a reserved volume only when it is one the webhook writes. Anything else is refused,
  naming the volume. (A pod carrying the marker is never mutated at all.)
- Only the socket's server, the container named ``aesmd`` (the injected sidecar, or the pod's own aesmd:
  Intel's DaemonSet is one), mounts the socket directory writable. Every other container is a client that
  only ``connect()``s, which a read-only mount allows: it cannot unlink ``aesm.socket`` or plant its own,
  on the node (host mode: the directory is shared by every pod there) or in the pod.
- A pod mount exactly where the webhook would mount is the pod's choice: kept, with a warning. So is a mount
  of the socket itself (``/var/run/aesmd/aesm.socket``: Alibaba's own samples mount the node's socket file
  so): the container has its socket, and the webhook's directory would only cover it. Any other pod mount
  inside such a path is refused (it would land in the socket directory, or under a file).
- ``$QCNL_CONF_PATH`` (where the webhook mounts the QCNL file) at, inside or above the socket directory or the
  SGX devices is refused naming the variable and the container: the file would hide the socket while
  ``SGX_AESM_ADDR=1`` says it is there, or the socket would hide the file. Never a half-configured pod.

:func:`plan_mounts` decides, for the pod the view describes, the mounts and volumes to add.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from confidential_pods.qcnl import QCNL_PATH, QCNL_PATH_ENV
from confidential_pods.settings import AesmMode
from webhook.contract import QCNL
from webhook.podview import ContainerRef, PodRefused, PodView

#: Every volume the webhook injects is named with this prefix; pods may not use it for their own.
RESERVED_PREFIX: Final = "confidential-pods-"
#: The AESM socket's directory: a hostPath (``aesm: host``) or an in-memory emptyDir (``aesm: sidecar``).
AESM_VOLUME: Final = RESERVED_PREFIX + "aesmd-socket"
AESM_MOUNT_PATH: Final = "/var/run/aesmd"
#: The socket aesmd serves in that directory (``SGX_AESM_ADDR=1`` makes the quote library dial it).
AESM_SOCKET_PATH: Final = AESM_MOUNT_PATH + "/aesm.socket"
#: The downward-API volume that turns the QCNL annotation into a file, and the file's name in it.
QCNL_VOLUME: Final = RESERVED_PREFIX + "qcnl"
QCNL_FILE: Final = "sgx_default_qcnl.conf"
#: Name of the injected AESM sidecar (and of a user's own, which is then kept): the socket's server.
AESM_SIDECAR: Final = "aesmd"
#: Where the SGX device plugins put the devices in an enclave container (the in-kernel driver's nodes, its
#: legacy /dev/sgx/ links, the out-of-tree driver's node): the QCNL file may not hide one.
DEVICE_PATHS: Final = ("/dev/sgx_enclave", "/dev/sgx_provision", "/dev/sgx", "/dev/isgx")


@dataclass(frozen=True)
class Mounts:
    """The webhook's mounts and volumes for one pod, less what the pod already has."""

    #: (container, mount) to append, in order: the QCNL file's, then the socket's.
    add: tuple[tuple[ContainerRef, Mapping[str, Any]], ...] = ()
    #: Volumes to append, in order.
    volumes: tuple[Mapping[str, Any], ...] = ()
    #: Some container reads the webhook's QCNL file: the annotation it is made of is written.
    qcnl: bool = False
    warnings: tuple[str, ...] = ()


def socket_volume(mode: AesmMode, host_path: str) -> dict[str, Any]:
    if mode == "host":
        # DirectoryOrCreate, as Intel's webhook: on a fresh node the aesmd pod may create it first.
        return {"name": AESM_VOLUME, "hostPath": {"path": host_path, "type": "DirectoryOrCreate"}}
    return {"name": AESM_VOLUME, "emptyDir": {"medium": "Memory"}}


def qcnl_volume() -> dict[str, Any]:
    field = f"metadata.annotations['{QCNL}']"
    items = [{"path": QCNL_FILE, "fieldRef": {"fieldPath": field}}]
    return {"name": QCNL_VOLUME, "downwardAPI": {"items": items}}


def socket_mount(*, server: bool) -> dict[str, Any]:
    """The socket directory: writable for its ``server`` (aesmd creates the socket), read-only for clients."""
    mount = {"name": AESM_VOLUME, "mountPath": AESM_MOUNT_PATH}
    return mount if server else {**mount, "readOnly": True}


def qcnl_mount(path: str) -> dict[str, Any]:
    return {"name": QCNL_VOLUME, "mountPath": path, "subPath": QCNL_FILE, "readOnly": True}


def plan_mounts(
    view: PodView,
    *,
    socket: AesmMode,
    clients: tuple[ContainerRef, ...],
    quoters: tuple[ContainerRef, ...],
    sidecar: bool,
    sidecar_qcnl: bool,
    host_path: str,
) -> Mounts:
    """What to add for ``clients`` (the AESM socket), ``quoters`` (the QCNL file) and an injected
    ``sidecar`` (the volumes it mounts); refuse a pod whose own volumes or mounts interfere."""
    ours = {QCNL_VOLUME: qcnl_volume()}
    if socket != "none":
        ours[AESM_VOLUME] = socket_volume(socket, host_path)
    _check_volumes(view, ours)
    for ref in view.containers.values():
        _check_reserved_mounts(view, ref)
    wanted = [(ref, qcnl_mount(_qcnl_path(view, ref, socket_too=ref in clients))) for ref in quoters]
    wanted += [(ref, socket_mount(server=ref.name == AESM_SIDECAR)) for ref in clients]
    add: list[tuple[ContainerRef, Mapping[str, Any]]] = []
    used = {AESM_VOLUME} if sidecar else set()
    used |= {QCNL_VOLUME} if sidecar_qcnl else set()
    warnings: list[str] = []
    for ref, mount in wanted:
        own = view.mounts(ref)
        if mount not in own:
            if not _fits(ref, mount, own, warnings):
                continue
            add.append((ref, mount))
        used.add(mount["name"])
    present = {volume["name"] for volume in view.volumes}
    volumes = tuple(volume for name, volume in ours.items() if name in used and name not in present)
    return Mounts(tuple(add), volumes, qcnl=QCNL_VOLUME in used, warnings=tuple(warnings))


def _qcnl_target(view: PodView, ref: ContainerRef) -> str:
    """Where the container's quote library reads its configuration: ``$QCNL_CONF_PATH`` when set to an
    absolute path (the last value wins, as in the kubelet), else ``/etc/sgx_default_qcnl.conf``."""
    value: object = None
    for variable in view.env(ref):
        if variable.get("name") == QCNL_PATH_ENV:
            value = variable.get("value")
    return value if isinstance(value, str) and value.startswith("/") else QCNL_PATH


def _qcnl_path(view: PodView, ref: ContainerRef, *, socket_too: bool) -> str:
    """The container's QCNL path, refused where it would hide (or be hidden by) the socket or a device."""
    target = _qcnl_target(view, ref)
    taken = dict.fromkeys(DEVICE_PATHS, "the SGX devices the device plugin adds")
    if socket_too:
        taken[AESM_MOUNT_PATH] = "the webhook mounts the AESM socket directory"
    for path, what in taken.items():
        if _overlaps(target, path):
            raise PodRefused(
                f"container {ref.name}: {QCNL_PATH_ENV}={target} is at, inside or above {path}, "
                f"where {what}; point {QCNL_PATH_ENV} at a file elsewhere (unset, the quote library "
                f"reads {QCNL_PATH})"
            )
    return target


def _check_volumes(view: PodView, ours: Mapping[str, Mapping[str, Any]]) -> None:
    for index, volume in enumerate(view.volumes):
        name = volume["name"]
        if name.startswith(RESERVED_PREFIX) and ours.get(name) != volume:
            raise PodRefused(
                f"spec.volumes[{index}]: the volume name {name} is reserved for the volumes the webhook "
                f"injects ({RESERVED_PREFIX}…) and this is not one of them as the webhook writes it; "
                "rename the volume"
            )


def _check_reserved_mounts(view: PodView, ref: ContainerRef) -> None:
    """A mount of a reserved volume must be one the webhook writes (its own output read again): the socket
    directory writable only in its server."""
    for index, mount in enumerate(view.mounts(ref)):
        name = mount["name"]
        if not name.startswith(RESERVED_PREFIX):
            continue
        ours = [socket_mount(server=False), qcnl_mount(mount["mountPath"])]
        if mount in ours or (ref.name == AESM_SIDECAR and mount == socket_mount(server=True)):
            continue
        raise PodRefused(
            f"{ref.where}.volumeMounts[{index}]: container {ref.name} mounts {name}, a volume name reserved "
            f"for the webhook ({RESERVED_PREFIX}…), differently from how the webhook mounts it; "
            "mount a volume of your own"
        )


def _fits(
    ref: ContainerRef, mount: Mapping[str, Any], own: list[Mapping[str, Any]], warnings: list[str]
) -> bool:
    """Whether ``mount`` can be added next to the container's ``own``: not when the container mounts
    something at its path (kept, with a warning); refused when it mounts something inside it."""
    path = mount["mountPath"]
    qcnl = mount["name"] == QCNL_VOLUME
    for theirs in own:
        if _normal(theirs["mountPath"]) == _normal(path):
            unused = "the webhook's PCCS settings" if qcnl else "the webhook's AESM socket"
            warnings.append(f"container {ref.name} mounts its own {path}: kept ({unused} unused)")
            return False
    for theirs in own:
        if not qcnl and _same(theirs["mountPath"], AESM_SOCKET_PATH):
            warnings.append(
                f"container {ref.name} mounts its own AESM socket at {theirs['mountPath']}: kept "
                f"(the webhook's {path} not mounted over it)"
            )
            return False
    for theirs in own:
        if _inside(theirs["mountPath"], path):
            what = "the quote library's configuration" if qcnl else "the AESM socket directory"
            raise PodRefused(
                f"container {ref.name} mounts {theirs['name']} at {theirs['mountPath']}, inside {path} where "
                f"the webhook mounts {what}; mount it elsewhere"
            )
    return True


def _normal(path: str) -> str:
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


#: Paths that are one directory in most images (FHS: /var/run is a symlink to /run); mount points are
#: resolved inside the container, so /run/aesmd/x lands in /var/run/aesmd there.
_ALIASES: Final = (("/var/run", "/run"),)


def _forms(path: str) -> set[str]:
    normal = _normal(path)
    forms = {normal}
    for alias, target in _ALIASES:
        if normal == alias or normal.startswith(alias + "/"):
            forms.add(target + normal[len(alias) :])
    return forms


def _same(one: str, other: str) -> bool:
    """The paths are the same (in any of their forms)."""
    return any(a == b for a in _forms(one) for b in _forms(other))


def _overlaps(one: str, other: str) -> bool:
    """The paths are the same, or one lies below the other (in any of their forms)."""
    return _same(one, other) or _inside(one, other) or _inside(other, one)


def _inside(inner: str, outer: str) -> bool:
    """``inner`` lies strictly below ``outer`` (in any of their forms)."""
    return any(i != o and i.startswith(o.rstrip("/") + "/") for i in _forms(inner) for o in _forms(outer))
