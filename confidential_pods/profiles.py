"""Resource profiles: how each SGX device plugin names and counts EPC.

One definition for the webhook (what to inject) and the extender (what to count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from confidential_pods.quantities import MiB, format_bytes, parse_whole

ProfileName = Literal["alibaba", "azure", "intel"]


@dataclass(frozen=True)
class Profile:
    """An SGX device plugin's resource contract."""

    name: ProfileName
    #: Extended resource that carries EPC, in requests, limits and node allocatable.
    epc_resource: str
    #: Bytes per unit of ``epc_resource`` (1 for bytes, 1 MiB for the MiB plugins).
    unit: int
    #: Extended resource each enclave container also needs (Intel's device plugin), if any.
    enclave_resource: str | None = None
    #: Pod annotation that carries the pod's total EPC (Kata sizes the VM's EPC from it), if any.
    epc_pod_annotation: str | None = None
    #: Extended resource that gives a container ``/dev/sgx_provision`` (DCAP quoting), or None where the
    #: device plugin passes it with the EPC resource: Alibaba's plugin mounts every SGX device of the node
    #: into a container that requests EPC (AliyunContainerService/sgx-device-plugin, device_plugin.go
    #: ``Allocate``); AKS offers one resource, and in-process quoting works with it (docs/attestation.md).
    provision_resource: str | None = None

    def to_units(self, amount: int) -> tuple[int, bool]:
        """Bytes → whole resource units, rounding a partial unit up. Returns (units, rounded)."""
        units = math.ceil(amount / self.unit) if self.unit > 1 else amount
        return units, units * self.unit != amount

    def resource_value(self, amount: int) -> tuple[str, bool]:
        """Bytes → the string to put in requests/limits. Returns (value, rounded)."""
        units, rounded = self.to_units(amount)
        if self.unit == 1:
            return format_bytes(units), rounded
        return str(units), rounded

    def parse_resource(self, value: object) -> int:
        """A quantity of ``epc_resource`` (as found in a pod or a node) → bytes.

        Extended resources are whole numbers (the API server refuses ``1.1``); so is this.
        Raises :class:`~confidential_pods.quantities.QuantityError` naming the value otherwise.
        """
        return parse_whole(value) * self.unit


_ALL = (
    Profile(name="alibaba", epc_resource="alibabacloud.com/sgx_epc_MiB", unit=MiB),
    Profile(name="azure", epc_resource="kubernetes.azure.com/sgx_epc_mem_in_MiB", unit=MiB),
    Profile(
        name="intel",
        epc_resource="sgx.intel.com/epc",
        unit=1,
        enclave_resource="sgx.intel.com/enclave",
        epc_pod_annotation="sgx.intel.com/epc",
        provision_resource="sgx.intel.com/provision",
    ),
)
#: The profiles by name. ``ProfileName`` lists the same names for the type checker (checked below).
PROFILES: dict[str, Profile] = {profile.name: profile for profile in _ALL}

assert set(PROFILES) == set(get_args(ProfileName)), "ProfileName and the profiles must name the same set"

__all__ = ["PROFILES", "Profile", "ProfileName", "format_bytes"]
