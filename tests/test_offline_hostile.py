"""Hostile and careless files for the offline commands: one line on stderr, the documented exit code.

``inject`` (exit 1 refused, 2 unreadable), ``simulate`` and ``extender serve --snapshot`` read files
through one reader (confidential_pods.documents); each case here was reproduced before the fix
(unbounded growth, a Python traceback, the pure-Python YAML parser, raw escape sequences).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods import documents
from confidential_pods.cli import main
from tests.extender import scheduler_json as sj


def list_bomb(levels: int = 9) -> str:
    """~830 bytes of nested `kind: List` whose aliases expand to 10^levels pods."""
    lines = ["a0: &a0 {kind: Pod, metadata: {name: p}, spec: {containers: [{name: c}]}}"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} {{kind: List, items: [{refs}]}}")
    lines.append(f"kind: List\nitems: [*a{levels}]")
    return "\n".join(lines) + "\n"


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def invoke(command: str, content: bytes | str, *flags: str) -> tuple[int, str]:
        path = tmp_path / "input.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        option = {"inject": "-f", "simulate": "--nodes"}[command]
        started = time.perf_counter()
        code = main([command, option, str(path), *flags])
        assert time.perf_counter() - started < 5  # a guard against unbounded work, not a benchmark
        err = capsys.readouterr().err
        return code, err

    return invoke


@pytest.mark.parametrize("command", ["inject", "simulate"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (list_bomb(), "YAML aliases (*name) are not accepted"),
        (b"kind: Pod\nmetadata: {name: \xff\xfe}\n", "is not UTF-8 text (byte 27)"),
        ("[" * 20_000, "nests deeper than 100 levels"),
        ("a: " + "[" * 20_000, "not valid YAML or JSON"),
        ("x:\n  - [" + "{a: " * 150 + "1" + "}" * 150 + "]\n", "nests deeper than 100 levels"),
        ("{unclosed", "not valid YAML or JSON"),
    ],
    ids=["alias-bomb", "not-utf8", "json-depth", "yaml-depth", "yaml-depth-objects", "broken"],
)
def test_unreadable_input_is_one_line_and_exit_2(
    run: Any,
    command: str,
    content: str | bytes,
    message: str,
) -> None:
    code, err = run(command, content)
    assert code == 2, err
    assert message in err and "input.yaml" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_refused_object_is_exit_1_naming_the_field(run: Any) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"confidential-pods.io/confidential": "true"}},
        "spec": {"containers": [{"name": "app", "image": "x"}], "volumes": {}},
    }
    code, err = run("inject", json.dumps(pod))
    assert code == 1 and "spec.volumes must be a list" in err and "Traceback" not in err


def test_inject_reads_with_libyaml() -> None:
    # The pure-Python parser took about 10 s for 1 MB; libyaml's is several times faster.
    if hasattr(yaml, "CSafeLoader"):
        assert issubclass(documents._NoAliasLoader, yaml.CSafeLoader)


def test_simulate_escapes_terminal_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil_node = "node\x1b[2J\x1b]0;owned\x07"
    evil_pod = sj.pod("pod\x1b[31mred", epc_mib=500)
    items = [{"kind": "Node", **sj.node(evil_node, 64)}, {"kind": "Pod", **evil_pod}]
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"kind": "List", "items": items}))
    assert main(["simulate", "--nodes", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "node\\x1b[2J\\x1b]0;owned\\x07" in out and "pod\\x1b[31mred" in out


def test_simulate_reports_unreadable_quantities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = sj.node("big", 64)
    node["status"]["allocatable"][sj.RESOURCE] = "1e99999999"
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"kind": "List", "items": [{"kind": "Node", **node}]}))
    started = time.perf_counter()
    assert main(["simulate", "--nodes", str(path)]) == 0
    assert time.perf_counter() - started < 5
    out = capsys.readouterr().out
    assert "Unreadable quantities, counted as no EPC (1)" in out and "Node big status.allocatable" in out
