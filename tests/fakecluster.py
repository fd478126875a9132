"""The state and the answers of the tests' one fake kube-apiserver; :mod:`tests.fakeapi` serves it over HTTP.

Resources (:data:`RESOURCES`): Nodes, Pods (and ``pods/binding``), Secrets, MutatingWebhookConfigurations.

* list: ``limit``/``continue`` pages at one resourceVersion; field selectors on the pod fields the feed
  uses (``spec.nodeName``, ``status.nominatedNodeName``; ``=``, ``==``, ``!=``, comma for "and");
* watch: from ``resourceVersion``, ``allowWatchBookmarks``, ``timeoutSeconds``; with a field selector, an
  object that leaves the selection arrives as DELETED (its previous state) and one that enters it as
  ADDED, as the apiserver's watch cache sends them. Objects carry real
  resourceVersions; :meth:`FakeCluster.compact` forgets history, so that a watch from an older version gets
  the apiserver's ``ERROR`` event with a 410 ``Expired`` Status;
* get, create (POST), update (PUT), patch (json-patch and merge-patch; strategic merge is refused with 415 as
  a reminder that it is not used), with the apiserver's Status errors (404 NotFound, 403 Forbidden,
  409 AlreadyExists, 422 Invalid) and the validation of Secrets and webhook configurations the certs
  commands could trip;
* ``POST .../pods/<name>/binding``: the pod gets its ``spec.nodeName`` and the answer is 201 with a Status
  (as the apiserver's); 404 for a pod that is not stored.

Faults: ``denied`` holds (verb, resource) pairs answered with 403; :meth:`FakeCluster.fail_request` (the next
request for a kind answers an HTTP error Status); :meth:`FakeCluster.disturb_stream` (the open watch drops
the connection mid-chunk, or sends ERROR 410, or ends); ``refuse_bindings`` (every binding answers that
Status). Every request is recorded in ``requests``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import jsonpatch

Kind = Literal["Node", "Pod", "Secret", "MutatingWebhookConfiguration"]
StreamFault = Literal["drop", "gone", "end"]
T = TypeVar("T")
#: Who the certs commands are, in a 403's message.
USER = "system:serviceaccount:confidential-pods:certs"


@dataclass(frozen=True)
class Resource:
    kind: Kind
    group: str  # "" for the core group
    namespaced: bool


RESOURCES: dict[str, Resource] = {
    "nodes": Resource("Node", "", namespaced=False),
    "pods": Resource("Pod", "", namespaced=True),
    "secrets": Resource("Secret", "", namespaced=True),
    "mutatingwebhookconfigurations": Resource(
        "MutatingWebhookConfiguration", "admissionregistration.k8s.io", namespaced=False
    ),
}
PLURALS: dict[Kind, str] = {resource.kind: plural for plural, resource in RESOURCES.items()}
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class Request:
    """One request as it arrived: ``name`` is None for a collection (list, watch, create)."""

    method: str
    path: str
    kind: Kind
    name: str | None
    subresource: str | None
    query: dict[str, str]
    content_type: str | None
    body: Any


#: Pod fields the fake's field selectors know.
SELECTABLE = frozenset({"spec.nodeName", "status.nominatedNodeName"})


def _requirement(text: str) -> tuple[str, bool, str]:
    """``field!=value`` / ``field==value`` / ``field=value`` → (field, negated, value)."""
    if "!=" in text:
        field, value = text.split("!=", 1)
        return field, True, value
    field, value = text.replace("==", "=", 1).split("=", 1)
    return field, False, value


def _asked(request: Request, kind: Kind, selector: str | None) -> bool:
    return request.kind == kind and (selector is None or request.query.get("fieldSelector", "") == selector)


def key(kind: Kind, obj: dict[str, Any]) -> str:
    """Where the store keeps ``obj``: ``namespace/name``, or ``name`` for a cluster-scoped kind."""
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if RESOURCES[PLURALS[kind]].namespaced else meta["name"]


def status(code: int, reason: str, message: str, *, name: str = "", plural: str = "") -> dict[str, Any]:
    """A failure ``Status`` as the apiserver sends it."""
    answer = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
              "reason": reason, "code": code}  # fmt: skip
    if name or plural:
        answer["details"] = {"name": name, "kind": plural}
    return answer


class FakeCluster:
    """Cluster state, event history, injected faults and the request log; what the apiserver answers."""

    def __init__(self, bookmark_interval: float = 0.2) -> None:
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects: dict[Kind, dict[str, dict[str, Any]]] = {kind: {} for kind in PLURALS}
        self.history: dict[Kind, list[tuple[int, str, dict[str, Any]]]] = {kind: [] for kind in PLURALS}
        #: The state before each MODIFIED event, by its resourceVersion (what a selection left).
        self.previous: dict[int, dict[str, Any]] = {}
        self.compacted: dict[Kind, int] = dict.fromkeys(PLURALS, 0)
        #: Injected faults with the field selector of the requests they are for (None: any).
        self.request_faults: dict[Kind, deque[tuple[int, str | None]]] = {kind: deque() for kind in PLURALS}
        self.stream_faults: dict[Kind, deque[tuple[StreamFault, str | None]]] = {k: deque() for k in PLURALS}
        self.denied: set[tuple[str, str]] = set()
        self.refuse_bindings: tuple[int, str] | None = None
        self.requests: list[Request] = []
        self.bindings: list[tuple[str, dict[str, Any]]] = []
        self.continues: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.bookmark_interval = bookmark_interval
        self.closed = False

    def close(self) -> None:
        """End every watch."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # --- cluster changes --------------------------------------------------------------------------

    def put(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update an object (ADDED or MODIFIED), stamping a new resourceVersion; its copy."""
        obj = copy.deepcopy(obj)
        with self.cond:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            where = key(kind, obj)
            kind_of_event = "MODIFIED" if where in self.objects[kind] else "ADDED"
            if kind_of_event == "MODIFIED":
                self.previous[self.rv] = self.objects[kind][where]
            self.objects[kind][where] = obj
            self.history[kind].append((self.rv, kind_of_event, obj))
            self.cond.notify_all()
            return copy.deepcopy(obj)

    def delete(self, kind: Kind, where: str) -> None:
        with self.cond:
            obj = copy.deepcopy(self.objects[kind].pop(where))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.history[kind].append((self.rv, "DELETED", obj))
            self.cond.notify_all()

    def add_webhook_configuration(self, name: str, webhooks: list[dict[str, Any]]) -> None:
        self.put(
            "MutatingWebhookConfiguration",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name, "labels": {"keep": "me"}},
                "webhooks": webhooks,
            },
        )

    def compact(self, kind: Kind) -> None:
        """Forget the history: watches from any version before now get 410 Gone."""
        with self.cond:
            self.compacted[kind] = self.rv + 1
            self.history[kind] = []

    def fail_request(self, kind: Kind, code: int, selector: str | None = None) -> None:
        """The next request for ``kind`` (with field selector ``selector``, if given) is answered with an
        HTTP ``code`` Status."""
        with self.cond:
            self.request_faults[kind].append((code, selector))

    def disturb_stream(self, kind: Kind, fault: StreamFault, selector: str | None = None) -> None:
        """The open (or next) watch of ``kind`` (with field selector ``selector``, if given): ``drop`` the
        connection mid-chunk, send ERROR 410 (``gone``) or ``end`` normally."""
        with self.cond:
            self.stream_faults[kind].append((fault, selector))
            self.cond.notify_all()

    def take_fault(self, faults: deque[tuple[T, str | None]], query: dict[str, str]) -> T | None:
        """The first of ``faults`` meant for a request with ``query`` (removed), or None. Under ``cond``."""
        for entry in faults:
            if entry[1] is None or entry[1] == query.get("fieldSelector", ""):
                faults.remove(entry)
                return entry[0]
        return None

    # --- what was asked -----------------------------------------------------------------------------

    def watches(self, kind: Kind, selector: str | None = None) -> list[dict[str, str]]:
        """Queries of the watches of ``kind`` (with field selector ``selector``, if given)."""
        with self.cond:
            return [
                r.query for r in self.requests if _asked(r, kind, selector) and r.query.get("watch") == "true"
            ]

    def lists(self, kind: Kind, selector: str | None = None) -> list[dict[str, str]]:
        """Queries of the lists of ``kind`` (with field selector ``selector``, if given)."""
        with self.cond:
            return [
                r.query
                for r in self.requests
                if _asked(r, kind, selector)
                and r.method == "GET"
                and r.name is None
                and r.query.get("watch") != "true"
            ]

    def writes(self) -> list[Request]:
        with self.cond:
            return [r for r in self.requests if r.method != "GET"]

    # --- serving ----------------------------------------------------------------------------------

    def matches(self, kind: Kind, obj: dict[str, Any], query: dict[str, str]) -> bool:
        """Whether ``obj`` is in the query's field selection (pkg/registry/core/pod: unset fields are "")."""
        selector = query.get("fieldSelector", "")
        for requirement in filter(None, selector.split(",")):
            field, negated, value = _requirement(requirement)
            assert field in SELECTABLE, f"fake apiserver does not know field selector {requirement!r}"
            section, name = field.split(".")
            actual = str(obj.get(section, {}).get(name) or "")
            if (actual == value) == negated:
                return False
        return True

    def selected(
        self, kind: Kind, rv: int, kind_of_event: str, obj: dict[str, Any], query: dict[str, str]
    ) -> tuple[str, dict[str, Any]] | None:
        """The event a watch with ``query`` sees for a stored event, or None (neither state is selected)."""
        now = self.matches(kind, obj, query)
        previous = self.previous.get(rv) if kind_of_event == "MODIFIED" else None
        before = previous is not None and self.matches(kind, previous, query)
        if previous is None or now == before:
            return (kind_of_event, obj) if now else None
        if now:
            return "ADDED", obj
        left = copy.deepcopy(previous)
        left["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
        return "DELETED", left

    def list_page(self, kind: Kind, query: dict[str, str]) -> dict[str, Any]:
        token = query.get("continue")
        with self.cond:
            if token:
                rv, items = self.continues.pop(token)
            else:
                rv = self.rv
                items = [copy.deepcopy(o) for _, o in sorted(self.objects[kind].items())]
                items = [o for o in items if self.matches(kind, o, query)]
            limit = int(query.get("limit", "0") or 0)
            page, rest = (items[:limit], items[limit:]) if limit else (items, [])
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if rest:
                next_token = f"{kind}-{rv}-{len(self.continues)}-{len(rest)}"
                self.continues[next_token] = (rv, rest)
                metadata["continue"] = next_token
        return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": metadata, "items": page}

    def stream(self, kind: Kind, query: dict[str, str]) -> Iterator[bytes | StreamFault]:
        """Watch events as JSON lines, or a fault to act on."""
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(query.get("timeoutSeconds") or 3600)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        if since < self.compacted[kind] - 1:
            message = f"too old resource version: {since} ({self.compacted[kind] - 1})"
            yield event_line({"type": "ERROR", "object": status(410, "Expired", message)})
            return
        sent = since
        last_bookmark = time.monotonic()
        while True:
            with self.cond:
                while True:
                    pending = [e for e in self.history[kind] if e[0] > sent]
                    fault = self.take_fault(self.stream_faults[kind], query)
                    if pending or fault or self.closed or time.monotonic() >= deadline:
                        break
                    if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                        break
                    self.cond.wait(0.02)
                current = self.rv
            if self.closed or time.monotonic() >= deadline:
                return
            for rv, kind_of_event, obj in pending:
                sent = rv
                seen = self.selected(kind, rv, kind_of_event, obj, query)
                if seen is not None:
                    yield event_line({"type": seen[0], "object": seen[1]})
            if fault is not None:
                yield fault
                if fault != "drop":
                    return
            if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                last_bookmark = time.monotonic()
                sent = max(sent, current)
                bookmark = {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(current)}}
                yield event_line({"type": "BOOKMARK", "object": bookmark})

    def answer(self, request: Request, namespace: str | None) -> tuple[int, dict[str, Any]]:
        """Status code and body for anything but a watch."""
        kind, name, plural = request.kind, request.name, PLURALS[request.kind]
        if request.method == "GET" and name is None:
            assert namespace is None, "fake apiserver lists and watches across namespaces only"
            return 200, self.list_page(kind, request.query)
        if request.method == "POST" and request.subresource == "binding":
            return self._bind(request, f"{namespace}/{name}")
        name = name or (request.body or {}).get("metadata", {}).get("name", "")
        where = f"{namespace}/{name}" if namespace is not None else name
        verb = VERBS[request.method]
        if (verb, plural) in self.denied:
            scope = f' in the namespace "{namespace}"' if namespace is not None else ""
            message = (
                f'{plural} "{name}" is forbidden: User "{USER}" cannot {verb} resource "{plural}" '
                f'in API group "{RESOURCES[plural].group}"{scope}'
            )
            return 403, status(403, "Forbidden", message, name=name, plural=plural)
        with self.cond:
            existing = copy.deepcopy(self.objects[kind].get(where))
        if request.method == "POST":
            if existing is not None:
                return 409, status(
                    409, "AlreadyExists", f'{plural} "{name}" already exists', name=name, plural=plural
                )
            return self._store(kind, None, copy.deepcopy(request.body), 201)
        if existing is None:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found', name=name, plural=plural)
        if request.method == "GET":
            return 200, existing
        return self._update(request, existing)

    def _update(self, request: Request, existing: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert request.name is not None
        name, plural = request.name, PLURALS[request.kind]
        if request.method == "PUT":
            updated = copy.deepcopy(request.body)
        elif request.content_type == "application/json-patch+json":
            try:
                updated = jsonpatch.apply_patch(existing, request.body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                message = f"the patch cannot be applied: {exc}"
                return 422, status(422, "Invalid", message, name=name, plural=plural)
        elif request.content_type == "application/merge-patch+json":
            updated = _merge(existing, request.body)
        else:
            message = f"unsupported patch type {request.content_type}"
            return 415, status(415, "UnsupportedMediaType", message, name=name, plural=plural)
        return self._store(request.kind, existing, updated, 200)

    def _store(
        self, kind: Kind, old: dict[str, Any] | None, new: dict[str, Any], code: int
    ) -> tuple[int, dict[str, Any]]:
        problem = _invalid(kind, old, new)
        if problem:
            plural = PLURALS[kind]
            return 422, status(422, "Invalid", problem, name=new["metadata"].get("name", ""), plural=plural)
        return code, self.put(kind, new)

    def _bind(self, request: Request, where: str) -> tuple[int, dict[str, Any]]:
        self.bindings.append((request.path, request.body))
        if self.refuse_bindings:
            code, message = self.refuse_bindings
            return code, status(code, "Conflict" if code == 409 else "Forbidden", message)
        with self.cond:
            pod = copy.deepcopy(self.objects["Pod"].get(where))
        if pod is None:
            name = request.name or ""
            return 404, status(404, "NotFound", f'pods "{name}" not found', name=name, plural="pods")
        pod["spec"]["nodeName"] = request.body["target"]["name"]
        self.put("Pod", pod)
        # The real API server answers 201 with a Status, not a Binding (the client's quirk).
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def _invalid(kind: Kind, old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """What the apiserver's validation would refuse in a Secret or a webhook configuration."""
    if kind == "MutatingWebhookConfiguration":
        for webhook in new.get("webhooks") or []:
            try:
                base64.b64decode(webhook.get("clientConfig", {}).get("caBundle", ""), validate=True)
            except binascii.Error:
                return "webhooks.clientConfig.caBundle: not base64"
        return None
    if kind != "Secret":
        return None
    if old is not None and old.get("type") != new.get("type"):
        return "type: Invalid value: field is immutable"
    for name, value in (new.get("data") or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            return f"data[{name}]: not base64"
    if new.get("type") == "kubernetes.io/tls":
        for name in ("tls.crt", "tls.key"):
            if name not in (new.get("data") or {}):
                return f"data[{name}]: Required value"
    return None


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge(result.get(name), value)
    return result


def event_line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"
