"""``PostsFirst`` (confidential_pods.endpoints) in the extender: the verbs answered in front of flask give
what flask's route gives, byte for byte.

A verb's POST with a ``Content-Length`` is answered by the middleware; the same request sent chunked (no
``Content-Length``) goes through flask's view of the same verb. Both must give the same status, headers and
body for every kind of answer (fit, refusal, malformed, not ready, unhandled exception), and the middleware
must leave to flask what is not a verb's POST with a body within the limit.
"""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask

from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.app import create_app
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger
from tests.extender import scheduler_json as sj
from tests.extender.ledgers import ledger_of
from tests.wsgi import both, call

NAMES = ["sgx-a", "sgx-b", "plain", "unknown"]


def make_app(ready: bool = True) -> Flask:
    ledger = ledger_of({"sgx-a": 93 * MiB, "sgx-b": 40 * MiB, "plain": None}, [])
    return create_app(ledger, Settings(), MemoryBinder(final=False), lambda: ready)


ARGS = sj.args_with_names(sj.pod("fits-one", epc_mib=64), NAMES)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/filter", json.dumps(ARGS).encode()),
        ("/prioritize", json.dumps(ARGS).encode()),
        ("/filter", json.dumps(sj.args_with_names(sj.pod("needs-none", epc_mib=0), NAMES)).encode()),
        ("/bind", json.dumps(sj.binding_args(sj.pod("binds", epc_mib=8), "sgx-a")).encode()),
        ("/bind", json.dumps(sj.binding_args(sj.pod("too-big", epc_mib=512), "sgx-a")).encode()),
        ("/preempt", json.dumps({"Pod": sj.pod("p"), "NodeNameToMetaVictims": {}}).encode()),
        ("/filter", b"[" * 100_000),
        ("/filter", b'{"Pod": 5}'),
        ("/prioritize", b""),
        ("/bind", b"not json"),
    ],
    ids=[
        "filter",
        "prioritize",
        "filter-no-epc",
        "bind",
        "bind-refused",
        "preempt",
        "deep",
        "pod-int",
        "empty",
        "bind-not-json",
    ],
)
def test_the_middleware_answers_as_flask_does(path: str, body: bytes) -> None:
    mine, flasks = both(make_app(), path, body)
    assert mine == flasks


VALID = {
    "/filter": ARGS,
    "/prioritize": ARGS,
    "/bind": sj.binding_args(sj.pod("binds", epc_mib=8), "sgx-a"),
    "/preempt": {"Pod": sj.pod("p"), "NodeNameToMetaVictims": {}},
}


@pytest.mark.parametrize("path", list(VALID))
def test_not_ready_answers_match(path: str) -> None:
    mine, flasks = both(make_app(ready=False), path, json.dumps(VALID[path]).encode())
    assert mine == flasks
    assert b"not ready" in mine[2]


def test_an_unhandled_exception_is_a_logged_500_in_the_apps_error_shape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: EpcLedger, read: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(EpcLedger, "with_usages", broken)  # what filter calls for a pod with EPC
    app = make_app()
    with caplog.at_level(logging.ERROR):
        status, headers, data = call(app, "/filter", json.dumps(ARGS).encode())
    assert status == "500 INTERNAL SERVER ERROR"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(data)["Error"].startswith("The server encountered an internal error")
    assert any("a bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    # flask's own handling of the same failure (the chunked request reaches its view) has the same shape
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert call(app, "/filter", json.dumps(ARGS).encode(), chunked=True)[0::2] == (status, data)


def test_a_body_shorter_than_its_content_length_is_400() -> None:
    body = json.dumps(ARGS).encode()
    status, _, data = call(make_app(), "/filter", body[:100], length=len(body))
    assert status == "400 BAD REQUEST"
    assert "Error" in json.loads(data)


def test_what_is_not_a_verbs_post_within_the_limit_goes_to_flask() -> None:
    app = make_app()
    body = json.dumps(ARGS).encode()
    assert call(app, "/filter/", body) == call(app, "/filter/", body, chunked=True)  # not the exact path
    assert call(app, "/filter", b"", method="GET")[0].startswith("405")
    app.config["MAX_CONTENT_LENGTH"] = 1024
    status, _, data = call(app, "/filter", body)
    assert status.startswith("413") and b"body larger than 1024 bytes" in data  # flask's limit and answer
    assert call(app, "/nothing", b"{}")[0].startswith("404")
    status, _, data = call(app, "/readyz", b"", method="GET")
    assert status.startswith("200")


def test_a_verbs_post_with_a_content_length_never_reaches_flask(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()

    def dispatch() -> None:
        raise AssertionError("reached flask")

    monkeypatch.setattr(app, "full_dispatch_request", dispatch)
    for path, body in VALID.items():
        assert call(app, path, json.dumps(body).encode())[0] == "200 OK", path
    # the chunked one does reach it (flask answers the AssertionError with its 500)
    assert call(app, "/filter", json.dumps(ARGS).encode(), chunked=True)[0] == "500 INTERNAL SERVER ERROR"


@pytest.mark.parametrize("length", ["\u0666\u0664", "9" * 5000, "-1", " 64", "0x40"])
def test_a_content_length_that_is_not_plain_digits_is_left_to_werkzeug(length: str) -> None:
    app = make_app()
    body = json.dumps(ARGS).encode()
    status, _, data = call(app, "/filter", body, length=length)
    assert not status.startswith("5"), data
