"""``kubectl confidential-pods nodes --extender URL``: the extender's ``/inspect`` answer, read bounded and
type-checked. A wrong shape is one line naming the field and exit code 2, never a traceback (issue 20,
defect 8): by table, by hypothesis over hostile shapes, and through the command as kubectl runs it.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.app import node_json
from extender.podepc import PodEpc
from operate.commands import plugin_main
from operate.inspection import MAX_INSPECT_BYTES, MalformedInspect, read_inspect
from operate.views import NodeRow, render_nodes
from tests import fuzzing
from tests.commands import kubectl_plugin
from tests.extender.ledgers import ledger_of
from tests.fakeapi import write_kubeconfig

MIB = 2**20
EPC = "alibabacloud.com/sgx_epc_MiB"


def inspect_answer() -> dict[str, Any]:
    """An /inspect answer as the extender serves it: two SGX nodes (one with a reservation and a
    nominated pod), one without SGX."""
    ledger = ledger_of(
        {"sgx-a": 96 * MIB, "sgx-b": 64 * MIB, "plain": None},
        [
            PodEpc("uid-kms", "shop", "kms", "sgx-a", 48 * MIB),
            PodEpc("uid-db", "shop", "db", "sgx-b", 60 * MIB),
        ],
        nominated=[PodEpc("uid-vip", "shop", "vip", "sgx-a", 16 * MIB, 1000)],
    )
    ledger.reserve(PodEpc("uid-new", "shop", "new", "sgx-b", 2 * MIB), now=0.0)
    nodes = [node_json(n) for n in (ledger.node(name) for name in sorted(ledger.nodes())) if n is not None]
    summary = {"resource": EPC, "ready": True, "nodeCount": 3, "podCount": 2, "reservationCount": 1}
    return {**summary, "nodes": nodes}


ANSWER = inspect_answer()
ROWS = [
    NodeRow("sgx-a", 96 * MIB, 48 * MIB, 0, 16 * MIB, 1),
    NodeRow("sgx-b", 64 * MIB, 60 * MIB, 2 * MIB, 0, 1),
]
#: ``nodes[1]`` is sgx-a (nodes are listed by name: plain, sgx-a, sgx-b).
SGX_A = 1


def with_field(path: tuple[str | int, ...], value: Any) -> bytes:
    """The answer with the field at ``path`` replaced (the key removed when ``value`` is ``...``)."""
    answer = copy.deepcopy(ANSWER)
    parent: Any = answer
    for part in path[:-1]:
        parent = parent[part]
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return json.dumps(answer).encode()


def test_the_extenders_own_answer_is_read() -> None:
    assert read_inspect(json.dumps(ANSWER).encode()) == ROWS  # "plain" has no SGX: left out


def test_each_nodes_attestation_is_read() -> None:
    """``attestation`` absent (an extender before it) or null: ``-``; else the table's text."""
    ready = read_inspect(with_field((*NODE, "attestation"), {"status": "True", "reason": "AllChecksPassed"}))
    assert {row.name: row.attestation for row in ready}[ANSWER["nodes"][SGX_A]["name"]] == "ready"
    broken = read_inspect(
        with_field((*NODE, "attestation"), {"status": "False", "reason": "AESMUnavailable"})
    )
    assert "NOT READY (AESMUnavailable)" in {row.attestation for row in broken}
    assert {row.attestation for row in read_inspect(with_field((*NODE, "attestation"), ...))} == {"-"}


NODE = ("nodes", SGX_A)
AMOUNT = "must be a whole number of bytes up to 2^63-1"
WRONG_SHAPES = [
    (b"[]", "/inspect: the answer must be a JSON object, not a list"),
    (b'"nodes"', "/inspect: the answer must be a JSON object, not 'nodes'"),
    (b'{"nodes":5}', "/inspect: nodes must be a list, not 5"),
    (with_field(("nodes",), ...), "/inspect: nodes must be a list, not None"),
    (with_field(("nodes",), {"sgx-a": {}}), "/inspect: nodes must be a list, not an object"),
    (with_field(NODE, "x"), "/inspect: nodes[1] must be an object, not 'x'"),
    (with_field(NODE, [ANSWER["nodes"][SGX_A]]), "/inspect: nodes[1] must be an object, not a list"),
    (with_field((*NODE, "pods"), 7), "/inspect: nodes[1].pods must be a list, not 7"),
    (with_field((*NODE, "pods"), None), "/inspect: nodes[1].pods must be a list, not None"),
    (with_field((*NODE, "name"), ...), "/inspect: nodes[1].name must be 1 to 253 characters, not None"),
    (with_field((*NODE, "name"), ""), "/inspect: nodes[1].name must be 1 to 253 characters, not ''"),
    (with_field((*NODE, "name"), "n" * 254), "/inspect: nodes[1].name must be 1 to 253 characters, not 'nnn"),
    (with_field((*NODE, "name"), 5), "/inspect: nodes[1].name must be 1 to 253 characters, not 5"),
    (with_field((*NODE, "used"), 10**400), f"/inspect: nodes[1].used {AMOUNT}, not a 1329-bit number"),
    (with_field((*NODE, "used"), 2**63), "/inspect: nodes[1].used must be"),
    (with_field((*NODE, "used"), -1), "/inspect: nodes[1].used must be"),
    (with_field((*NODE, "used"), True), f"/inspect: nodes[1].used {AMOUNT}, not True"),
    (with_field((*NODE, "used"), 1.0), "/inspect: nodes[1].used must be"),
    (with_field((*NODE, "reserved"), "0"), "/inspect: nodes[1].reserved must be"),
    (with_field((*NODE, "capacity"), "93"), "/inspect: nodes[1].capacity must be"),
    (with_field((*NODE, "capacity"), 1e400), "/inspect: nodes[1].capacity must be"),  # Infinity
    (with_field((*NODE, "nominated"), {}), "/inspect: nodes[1].nominated must be a list, not an object"),
    (with_field((*NODE, "nominated", 0), 5), "/inspect: nodes[1].nominated[0] must be an object, not 5"),
    (with_field((*NODE, "nominated", 0, "epc"), "16Mi"), "/inspect: nodes[1].nominated[0].epc must be"),
    (with_field(("nodes", 0, "used"), None), "/inspect: nodes[0].used must be"),  # no SGX, checked as well
    (with_field((*NODE, "attestation"), "ready"), "/inspect: nodes[1].attestation must be an object or null"),
    (
        with_field((*NODE, "attestation"), {"status": True}),
        "/inspect: nodes[1].attestation.status must be True,",
    ),
    (
        with_field((*NODE, "attestation"), {"status": "False", "reason": "r" * 301}),
        "/inspect: nodes[1].attestation.reason must be a string of at most 300 characters",
    ),
    (
        with_field((*NODE, "attestation"), {"status": "True", "stale": "yes"}),
        "/inspect: nodes[1].attestation.stale must be true or false, not 'yes'",
    ),
    (b"<html>502 Bad Gateway</html>", "/inspect: the answer is not JSON: Expecting value"),
    (b"[" * 100_000, "/inspect: the answer is nested too deeply"),
    (b'{"nodes":[{"used":' + b"9" * 5000 + b"}]}", "/inspect: the answer is not JSON"),
    (b"\xff\xfe\xfa", "/inspect: the answer is not JSON"),
]


@pytest.mark.parametrize(("body", "message"), WRONG_SHAPES)
def test_a_wrong_shape_is_one_line_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(MalformedInspect) as raised:
        read_inspect(body)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_an_answer_larger_than_the_bound_is_not_decoded() -> None:
    with pytest.raises(MalformedInspect, match="larger than 64 MiB"):
        read_inspect(b" " * (MAX_INSPECT_BYTES + 1))


#: Every field the reader reads, and the containers on the way.
INSPECT_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("nodes",),
    ("nodes", 0),
    ("nodes", SGX_A),
    *((*NODE, field) for field in ("name", "capacity", "used", "reserved", "pods", "nominated")),
    (*NODE, "nominated", 0),
    (*NODE, "nominated", 0, "epc"),
    ("nodes", 2, "pods", 0),
)


def read_or_refuse(body: bytes) -> list[NodeRow] | None:
    """The rows, or None when refused with one line; any other exception fails the test."""
    try:
        rows = read_inspect(body)
    except MalformedInspect as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return None
    render_nodes(rows, EPC, "the extender")  # what the command prints next must not fail either
    json.dumps([{**row.__dict__, "free": row.free} for row in rows])
    return rows


@settings(max_examples=400, deadline=None)
@given(answer=fuzzing.poisoned_at(ANSWER, INSPECT_PATHS))
def test_hostile_fields_are_read_or_refused_in_one_line(answer: Any) -> None:
    body = json.dumps(answer).encode()
    rows = read_or_refuse(body)
    if rows is not None:  # what was accepted is what the extender could have served
        assert all(0 <= n < 2**63 for row in rows for n in (row.capacity, row.used, row.reserved))


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=64) | fuzzing.json_values.map(encoded) | fuzzing.deep(max_depth=500).map(encoded)
)
def test_hostile_answers_are_read_or_refused_in_one_line(body: bytes) -> None:
    read_or_refuse(body)


# --- through the command ------------------------------------------------------------------------------


class Extender:
    """A stand-in for the extender's port-forward: answers every GET with ``body``."""

    def __init__(self) -> None:
        self.body = b"{}"
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(served.body)))
                self.end_headers()
                self.wfile.write(served.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def extender() -> Iterator[Extender]:
    served = Extender()
    thread = threading.Thread(target=served.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture(scope="module")
def nodes_args(extender: Extender, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``nodes --extender URL`` with a kubeconfig (never dialled: the configuration is a file)."""
    directory = tmp_path_factory.mktemp("plugin")
    kubeconfig = write_kubeconfig(directory / "kubeconfig", "http://127.0.0.1:9")
    config = directory / "config.yaml"
    config.write_text("profile: alibaba\n")
    return ["nodes", "--kubeconfig", str(kubeconfig), "--config", str(config), "--extender", extender.url]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "the answer must be a JSON object"),
        (b'{"nodes":5}', "nodes must be a list"),
        (with_field((*NODE, "pods"), 7), "nodes[1].pods must be a list"),
        (with_field((*NODE, "used"), 10**400), "nodes[1].used must be a whole number"),
        (with_field((*NODE, "nominated"), [None]), "nodes[1].nominated[0] must be an object"),
    ],
)
def test_the_plugin_prints_one_line_and_exits_2(
    extender: Extender, nodes_args: list[str], capsys: pytest.CaptureFixture[str], body: bytes, field: str
) -> None:
    extender.body = body
    assert plugin_main(nodes_args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"confidential-pods: {extender.url}/inspect: {field}")
    assert err.count("\n") == 1 and err.endswith("\n")


def test_the_plugin_prints_the_extenders_answer(
    extender: Extender, nodes_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    extender.body = json.dumps(ANSWER).encode()
    assert plugin_main([*nodes_args, "-o", "json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["sgx-a", "sgx-b"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=fuzzing.poisoned_at(ANSWER, INSPECT_PATHS))
def test_the_plugin_fuzzed_exits_0_or_2_with_one_line(
    extender: Extender, nodes_args: list[str], capsys: pytest.CaptureFixture[str], answer: Any
) -> None:
    extender.body = json.dumps(answer).encode()
    code = plugin_main(nodes_args)
    out, err = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        assert out == "" and err.startswith("confidential-pods: ") and err.count("\n") == 1


def test_the_installed_executable_shows_no_traceback(extender: Extender, nodes_args: list[str]) -> None:
    """As kubectl runs it: ``kubectl-confidential_pods`` beside this interpreter."""
    if not Path(kubectl_plugin()[0]).is_file():
        pytest.skip("kubectl-confidential_pods is not installed beside this interpreter")
    extender.body = with_field((*NODE, "pods"), 7)
    done = subprocess.run(kubectl_plugin(*nodes_args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"confidential-pods: {extender.url}/inspect: nodes[1].pods must be a list, not 7\n"
