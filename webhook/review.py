"""AdmissionReview wire format (admission.k8s.io/v1, v1beta1): typed dicts, parsing, responses."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from confidential_pods.errors import MalformedInput
from confidential_pods.wire import PatchOperation, Status, decode_json

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
ApiVersion = Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class AdmissionRequest(TypedDict, total=False):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str
    requestKind: GroupVersionKind
    requestResource: GroupVersionResource
    requestSubResource: str
    name: str
    namespace: str
    operation: Operation
    userInfo: dict[str, Any]
    object: Any
    oldObject: Any
    dryRun: bool
    options: Any


class AdmissionResponse(TypedDict, total=False):
    uid: str
    allowed: bool
    status: Status
    patch: str
    patchType: Literal["JSONPatch"]
    warnings: list[str]
    auditAnnotations: dict[str, str]


class AdmissionReview(TypedDict, total=False):
    apiVersion: ApiVersion
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest
    response: AdmissionResponse


class MalformedReview(MalformedInput):
    """The body is not an AdmissionReview we can answer (no JSON, no request, no uid): HTTP 400."""


def parse_review(body: bytes) -> tuple[ApiVersion, AdmissionRequest]:
    """Decode an AdmissionReview body into its apiVersion and request."""
    try:
        review = decode_json(body)
    except MalformedInput as exc:
        raise MalformedReview(str(exc)) from None
    if not isinstance(review, dict):
        raise MalformedReview("body is not a JSON object")
    api_version = review.get("apiVersion", API_VERSIONS[0])
    if api_version not in API_VERSIONS:
        raise MalformedReview(f"apiVersion {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    if review.get("kind", "AdmissionReview") != "AdmissionReview":
        raise MalformedReview(f"kind {review.get('kind')!r} is not AdmissionReview")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("AdmissionReview request has no uid")
    return api_version, request  # type: ignore[return-value]  # shape of the rest is checked where used


def build_review(
    *,
    api_version: ApiVersion,
    uid: str,
    allowed: bool = True,
    patch: Sequence[PatchOperation] = (),
    warnings: Sequence[str] = (),
    message: str = "",
    code: int = 403,
) -> AdmissionReview:
    """The AdmissionReview answer: uid echoed, patch base64'd, patchType only with a patch."""
    response: AdmissionResponse = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "message": message, "reason": _REASONS.get(code, "Forbidden")}
    if patch and allowed:
        response["patch"] = base64.b64encode(json.dumps(list(patch), separators=(",", ":")).encode()).decode()
        response["patchType"] = "JSONPatch"
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError"}
