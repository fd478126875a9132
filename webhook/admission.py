"""From an AdmissionRequest to an answer: which requests are ours, and what the policy says."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confidential_pods.settings import Settings
from webhook.metrics import Outcome
from webhook.mutation import Mutation
from webhook.review import AdmissionRequest, AdmissionReview, ApiVersion, build_review

#: Namespaces never mutated, whatever the webhook configuration sends.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class Decision:
    review: AdmissionReview
    outcome: Outcome
    mutation: Mutation | None = None


#: What one endpoint does with a pod of a request that is ours: (raw Pod JSON, its namespace) → answer.
Decide = Callable[[Mapping[str, Any], str], Mutation]


def admit(
    api_version: ApiVersion, request: AdmissionRequest, *, decide: Decide, settings: Settings
) -> Decision:
    """Answer one admission request: malformed fields are refused, requests that are not pod creations
    outside the system namespaces pass unchanged, and ``decide`` answers for the others."""
    uid = request["uid"]
    problem = _malformed_field(request)
    if problem is not None:
        review = build_review(api_version=api_version, uid=uid, allowed=False, code=400, message=problem)
        return Decision(review, "malformed")
    if _not_ours(request, settings):
        return Decision(build_review(api_version=api_version, uid=uid), "skipped")
    mutation = decide(request["object"], _namespace(request))
    review = build_review(
        api_version=api_version,
        uid=uid,
        allowed=mutation.allowed,
        patch=mutation.patch,
        warnings=mutation.warnings,
        message=mutation.message,
    )
    return Decision(review, mutation.outcome, mutation)


#: Fields of the AdmissionRequest read to decide whether it is ours, with their JSON types.
_REQUEST_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("kind", dict, "an object"),
    ("operation", str, "a string"),
    ("subResource", str, "a string"),
    ("namespace", str, "a string"),
)


def _malformed_field(request: AdmissionRequest) -> str | None:
    """Why the request cannot be read (a field of the wrong JSON type), naming the field; else None."""
    fields: Mapping[str, Any] = request
    for name, kind, described in _REQUEST_FIELDS:
        value = fields.get(name)
        if value is not None and type(value) is not kind:
            return f"request.{name} must be {described}"
    for name in ("group", "version", "kind"):
        value = (fields.get("kind") or {}).get(name)
        if value is not None and type(value) is not str:
            return f"request.kind.{name} must be a string"
    if type(fields.get("object")) is not dict and _is_pod_create(fields):
        return "request.object is not a Pod object"
    return None


def _is_pod_create(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind") or {}
    return (
        kind.get("kind") == "Pod"
        and kind.get("group", "") == ""
        and not request.get("subResource")
        and request.get("operation") == "CREATE"
    )


def _not_ours(request: AdmissionRequest, settings: Settings) -> bool:
    if not _is_pod_create(request):
        return True
    namespace = _namespace(request)
    return namespace in SYSTEM_NAMESPACES or namespace == settings.own_namespace


def _namespace(request: AdmissionRequest) -> str:
    """The pod's namespace: the request's, else the object's ("" when neither is a string)."""
    namespace = request.get("namespace")
    if not namespace:
        metadata = request["object"].get("metadata")
        namespace = metadata.get("namespace") if type(metadata) is dict else None
    return namespace if type(namespace) is str else ""
