"""EPC limits for the node to enforce (``epcLimits: nri``): the annotations of the ``sgx-epc`` NRI plugin.

containers/nri-plugins' ``sgx-epc`` plugin (cmd/plugins/sgx-epc/sgx-epc.go and docs/memory/sgx-epc.md at
commit 0705acc824ee3c98f66665a5879bbcafae160c9a) reads, when the runtime creates a container, the first of
these pod annotations that exists:

* ``epc-limit.nri.io/container.<container name>`` — that container;
* ``epc-limit.nri.io/pod`` — every container of the pod;
* ``epc-limit.nri.io`` — the same, another spelling.

The value is parsed with Go's ``strconv.ParseUint(value, 10, 64)``: decimal digits only, no quantity suffix
(``32Mi`` fails the container's creation), and it is written as ``misc.max`` = ``sgx_epc <value>`` of the
container's cgroup, where the kernel's EPC cgroup charges ``PAGE_SIZE`` per EPC page: the unit is bytes.
``0`` means *no limit* (the plugin adjusts only ``limit > 0``).

What the webhook writes (:func:`limit_annotations`): for every container of the mutated pod that requests
EPC — the enclave containers, the injected aesmd sidecar, a container that set the resource itself — the
container's own key, equal to its EPC in bytes. The container key is read first, so nothing the pod's author
writes (``…/pod``, the bare key, ``0``, a larger number) reaches a container with EPC: an author's
container key that differs is replaced, with a warning (refusing instead would refuse the pods of a
workload whose template still carries the value of an older ``defaultEPC``). Containers without EPC get no
SGX device from the device plugin, so the pod-level keys, which only they read, are left to the author.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from confidential_pods.epc import container_request
from confidential_pods.errors import shown
from confidential_pods.profiles import Profile
from confidential_pods.wire import mapping, sequence
from webhook.podview import PodRefused

#: The plugin's base key (``epcLimitKey`` in sgx-epc.go).
LIMIT_KEY: Final = "epc-limit.nri.io"
CONTAINER_KEY: Final = LIMIT_KEY + "/container."
POD_KEY: Final = LIMIT_KEY + "/pod"
#: The name part of an annotation key (after the ``/``) is at most 63 characters (Kubernetes'
#: ``IsQualifiedName``): ``container.`` leaves 53 for the container's name.
LONGEST_NAME: Final = 63 - len("container.")


def limit_annotations(pod: Mapping[str, Any], profile: Profile) -> dict[str, str]:
    """The ``sgx-epc`` plugin's annotation of each container of ``pod`` that requests EPC: key → bytes.

    Raises :class:`PodRefused` for a container whose name is too long for an annotation key (the API server
    would refuse the pod with a message about an annotation the author never wrote)."""
    spec = mapping(pod.get("spec"))
    wanted: dict[str, str] = {}
    for field in ("initContainers", "containers"):
        for raw in sequence(spec.get(field)):
            container = mapping(raw)
            epc = container_request(container, profile)
            if epc <= 0:
                continue
            name = str(container.get("name"))
            if len(name) > LONGEST_NAME:
                raise PodRefused(
                    f"container {name[:LONGEST_NAME]}… requests SGX EPC and its name is {len(name)} "
                    f"characters long: the EPC limit annotation {CONTAINER_KEY}<name> (epcLimits: nri) "
                    f"allows {LONGEST_NAME}; shorten the name"
                )
            wanted[CONTAINER_KEY + name] = str(epc)
    return wanted


def changed_limits(
    annotations: Mapping[str, str], wanted: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The limit annotations to write (those ``annotations`` lacks or holds otherwise) and a warning for each
    value of the author's that is replaced."""
    write = {key: value for key, value in wanted.items() if annotations.get(key) != value}
    warnings = [
        f"annotation {key}={shown(annotations[key])} replaced by {value}, the container's EPC in bytes "
        f"(epcLimits: nri)"
        for key, value in write.items()
        if key in annotations
    ]
    return write, warnings
