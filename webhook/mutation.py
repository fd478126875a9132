"""What the webhook answers for one pod: :class:`Mutation` (a patch and warnings, or a denial)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from webhook.patching import PatchOperation

Outcome = Literal["mutated", "unchanged", "skipped", "denied"]


@dataclass(frozen=True)
class Mutation:
    """The answer for one pod: patch operations and warnings, or a denial message."""

    outcome: Outcome
    patch: tuple[PatchOperation, ...] = ()
    warnings: tuple[str, ...] = ()
    message: str = ""
    #: Where the pod's AESM socket comes from ("" unless mutated): ``host`` is a hostPath volume.
    aesm: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome != "denied"
