"""From an AdmissionRequest to an answer: which requests are ours, and what the policy says."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confidential_pods.settings import Settings
from webhook.metrics import Outcome
from webhook.policy import Mutation, mutate
from webhook.review import AdmissionRequest, AdmissionReview, ApiVersion, build_review

#: Namespaces never mutated, whatever the webhook configuration sends.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class Decision:
    review: AdmissionReview
    outcome: Outcome
    mutation: Mutation | None = None


def admit(
    api_version: ApiVersion,
    request: AdmissionRequest,
    *,
    namespace_opted_in: bool,
    settings: Settings,
) -> Decision:
    """Answer one admission request. ``namespace_opted_in`` is true on ``/mutate/namespace``."""
    uid = request["uid"]
    skip = _not_ours(request, settings)
    if skip:
        return Decision(build_review(api_version=api_version, uid=uid), "skipped")
    pod = request.get("object")
    if not isinstance(pod, Mapping):
        review = build_review(
            api_version=api_version,
            uid=uid,
            allowed=False,
            code=400,
            message="request.object is not a Pod object",
        )
        return Decision(review, "malformed")
    mutation = mutate(pod, namespace_opted_in=namespace_opted_in, settings=settings)
    review = build_review(
        api_version=api_version,
        uid=uid,
        allowed=mutation.allowed,
        patch=mutation.patch,
        warnings=mutation.warnings,
        message=mutation.message,
    )
    return Decision(review, mutation.outcome, mutation)


def _not_ours(request: AdmissionRequest, settings: Settings) -> bool:
    kind: Any = request.get("kind")
    if not isinstance(kind, Mapping) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return True
    if request.get("subResource") or request.get("operation") != "CREATE":
        return True
    namespace = request.get("namespace")
    if not namespace:
        obj: Any = request.get("object")
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return namespace in SYSTEM_NAMESPACES or namespace == settings.own_namespace
