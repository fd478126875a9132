"""A test double of the kube-apiserver at the HTTP level, for the calls the certs commands make.

It serves Secrets and MutatingWebhookConfigurations on 127.0.0.1 (plain HTTP) so that the real kubernetes
client code runs: GET, POST (create), PUT (replace) and PATCH (json-patch and merge-patch; strategic merge is
refused with 415 as a reminder that it is not used). Errors are ``Status`` objects as the apiserver sends
them (404 NotFound, 403 Forbidden, 409 AlreadyExists, 422 Invalid). Forbidden verbs are configured per
(verb, resource). Every request is recorded.

Issue 4 allows this double for install/rotate until the real control plane of issue 5 arrives.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

SECRETS = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/secrets(?:/(?P<name>[^/]+))?$")
WEBHOOKS = re.compile(
    r"^/apis/admissionregistration\.k8s\.io/v1/mutatingwebhookconfigurations(?:/(?P<name>[^/]+))?$"
)
USER = "system:serviceaccount:confidential-pods:certs"


@dataclass
class Request:
    method: str
    path: str
    content_type: str | None
    body: Any


@dataclass
class FakeApi:
    """State and request log; ``denied`` holds (verb, resource) pairs answered with 403."""

    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    webhook_configurations: dict[str, dict[str, Any]] = field(default_factory=dict)
    denied: set[tuple[str, str]] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    version: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def writes(self) -> list[Request]:
        return [request for request in self.requests if request.method != "GET"]

    def add_webhook_configuration(self, name: str, webhooks: list[dict[str, Any]]) -> None:
        self.webhook_configurations[name] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "resourceVersion": self._next_version(), "labels": {"keep": "me"}},
            "webhooks": webhooks,
        }

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "certs", "user": {"token": "test-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "certs"}}],
                    "current-context": "fake",
                }
            )
        )
        return path


def _status(code: int, reason: str, message: str, kind: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": kind},
        "code": code,
    }


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


class _Handler(BaseHTTPRequestHandler):
    api: FakeApi

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _handle(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body() if method in ("POST", "PUT", "PATCH") else None
        content_type = self.headers.get("Content-Type")
        api = self.api
        with api.lock:
            api.requests.append(Request(method, path, content_type, copy.deepcopy(body)))
            code, answer = self._dispatch(method, path, content_type, body)
        self._send(code, answer)

    def _dispatch(
        self, method: str, path: str, content_type: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        api = self.api
        store: dict[Any, dict[str, Any]]
        key: Any
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}[method]
        if match := SECRETS.match(path):
            namespace, name = (
                match["namespace"],
                match["name"] or (body or {}).get("metadata", {}).get("name"),
            )
            resource, group, kind, store, key = "secrets", "", "secrets", api.secrets, (namespace, name)
            scope = f' in the namespace "{namespace}"'
        elif match := WEBHOOKS.match(path):
            name = match["name"] or (body or {}).get("metadata", {}).get("name")
            resource, group = "mutatingwebhookconfigurations", "admissionregistration.k8s.io"
            kind, store, key, scope = resource, api.webhook_configurations, name, ""
        else:
            return 404, _status(404, "NotFound", f"the server could not find {path}", "", "")
        if (verb, resource) in api.denied:
            message = (
                f'{kind} "{name}" is forbidden: User "{USER}" cannot {verb} resource "{resource}" '
                f'in API group "{group}"{scope}'
            )
            return 403, _status(403, "Forbidden", message, kind, name)
        existing = store.get(key)
        if method == "POST":
            if existing is not None:
                return 409, _status(409, "AlreadyExists", f'{kind} "{name}" already exists', kind, name)
            created = copy.deepcopy(body)
            problem = self._invalid(resource, None, created)
            if problem:
                return 422, _status(422, "Invalid", problem, kind, name)
            created["metadata"]["resourceVersion"] = api._next_version()
            store[key] = created
            return 201, created
        if existing is None:
            return 404, _status(404, "NotFound", f'{kind} "{name}" not found', kind, name)
        if method == "GET":
            return 200, copy.deepcopy(existing)
        if method == "PUT":
            updated = copy.deepcopy(body)
        elif content_type == "application/json-patch+json":
            try:
                updated = jsonpatch.apply_patch(existing, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return 422, _status(422, "Invalid", f"the patch cannot be applied: {exc}", kind, name)
        elif content_type == "application/merge-patch+json":
            updated = _merge(existing, body)
        else:
            return 415, _status(
                415, "UnsupportedMediaType", f"unsupported patch type {content_type}", kind, name
            )
        problem = self._invalid(resource, existing, updated)
        if problem:
            return 422, _status(422, "Invalid", problem, kind, name)
        updated["metadata"]["resourceVersion"] = api._next_version()
        store[key] = updated
        return 200, copy.deepcopy(updated)

    @staticmethod
    def _invalid(resource: str, old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
        if resource != "secrets":
            for webhook in new.get("webhooks") or []:
                try:
                    base64.b64decode(webhook.get("clientConfig", {}).get("caBundle", ""), validate=True)
                except binascii.Error:
                    return "webhooks.clientConfig.caBundle: not base64"
            return None
        if old is not None and old.get("type") != new.get("type"):
            return "type: Invalid value: field is immutable"
        for key, value in (new.get("data") or {}).items():
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error:
                return f"data[{key}]: not base64"
        if new.get("type") == "kubernetes.io/tls":
            for key in ("tls.crt", "tls.key"):
                if key not in (new.get("data") or {}):
                    return f"data[{key}]: Required value"
        return None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")


class FakeApiServer:
    """Context manager: the double listening on 127.0.0.1:<free port>."""

    def __init__(self, api: FakeApi | None = None) -> None:
        self.api = api or FakeApi()
        handler = type("Handler", (_Handler,), {"api": self.api})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.api.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeApi:
        self._thread.start()
        return self.api

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
