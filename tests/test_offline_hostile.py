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
from confidential_pods.errors import ConfigError, MalformedInput
from confidential_pods.settings import load_settings
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
        (list_bomb(), "contains excessive aliasing"),
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
        assert documents._BASE_LOADER is yaml.CSafeLoader


def config_bomb(levels: int = 8) -> str:
    """~600 bytes of configuration whose ``dcap.extra`` nests aliases ``levels`` deep (9^levels lists)."""
    lines = ["profile: alibaba", "dcap:", "  pccsUrl: https://pccs.example:8081/sgx/certification/v4/"]
    lines.append("  extra:")
    lines.append("    l0: &l0 [x, x, x, x, x, x, x, x, x]")
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"    l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "command",
    [
        ["inject", "-f", "-"],
        ["qcnl"],
        ["simulate"],
        ["webhook", "serve", "--cert", "missing.crt", "--key", "missing.key"],
        ["extender", "serve", "--snapshot", "-"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_a_configuration_alias_bomb_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # Every command with --config reads it through confidential_pods.documents (one reader): before,
    # yaml.safe_load built the shared graph and whatever walked dcap.extra next ran for minutes.
    config = tmp_path / "config.yaml"
    config.write_text(config_bomb())
    assert len(config.read_bytes()) < 700
    started = time.perf_counter()
    code = main([*command, "--config", str(config)])
    assert time.perf_counter() - started < 5  # a guard against unbounded work, not a benchmark
    err = capsys.readouterr().err
    assert code == 2, err
    assert "configuration file" in err and "config.yaml contains excessive aliasing" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_recursive_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "input.yaml"
    path.write_text("kind: List\nitems: &a [*a]\n")
    assert main(["inject", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input.yaml an alias repeats a node inside itself" in err and err.count("\n") == 1


def test_aliases_repeated_inside_an_alias_count_at_their_depth() -> None:
    # 60 levels of mappings behind an anchor, used 60 levels deep: 120 once expanded.
    deep = "{a: " * 60 + "1" + "}" * 60
    text = f"x: &d {deep}\ny: " + "{b: " * 60 + "*d" + "}" * 60 + "\n"
    with pytest.raises(MalformedInput, match="nests deeper than 100 levels"):
        documents.load_documents(text, "deep.yaml")


@pytest.mark.parametrize(
    ("expanded", "ratio"),
    [(0, 0.99), (400_000, 0.99), (2_200_000, 0.545), (4_000_000, 0.10), (10**30, 0.10)],
)
def test_the_allowed_alias_ratio_is_go_yamls(expanded: int, ratio: float) -> None:
    assert documents.allowed_alias_ratio(expanded) == pytest.approx(ratio)


def test_pyyaml_anchors_for_shared_objects_are_read_as_copies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # yaml.dump writes &id001 ... *id001 for an object shared by two places; kubectl reads such a file,
    # and so must we (aliases used to be refused outright). Each alias becomes its own copy: injecting
    # EPC into one container must not change the other's resources.
    resources: dict[str, Any] = {"requests": {"cpu": "100m"}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "shop",
            "annotations": {
                "confidential-pods.io/confidential": "true",
                "confidential-pods.io/containers": "app",
                "confidential-pods.io/runtime-class": "none",
                "confidential-pods.io/aesm": "none",
                "confidential-pods.io/quote": "none",
            },
        },
        "spec": {
            "containers": [
                {"name": "app", "image": "x", "resources": resources},
                {"name": "helper", "image": "y", "resources": resources},
            ]
        },
    }
    text = yaml.dump(pod)
    assert "&id001" in text and "*id001" in text
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    code = main(["inject", "-f", str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = yaml.safe_load(captured.out)
    app, helper = out["spec"]["containers"]
    assert "limits" in app["resources"] and app["resources"]["limits"]
    assert helper["resources"] == {"requests": {"cpu": "100m"}}


def test_hand_written_anchors_and_merge_keys_are_read() -> None:
    text = """\
defaults: &defaults
  image: registry.example/app:1
  env: [{name: A, value: "1"}]
kind: Pod
metadata: {name: p}
spec:
  containers:
    - <<: *defaults
      name: app
    - <<: *defaults
      name: sidecar
"""
    (document,) = documents.load_documents(text, "pod.yaml")
    app, sidecar = document["spec"]["containers"]
    assert app == {"image": "registry.example/app:1", "env": [{"name": "A", "value": "1"}], "name": "app"}
    assert sidecar["name"] == "sidecar" and sidecar["env"] == app["env"]
    assert sidecar["env"] is not app["env"]


def test_a_configuration_file_with_anchors_is_read(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "profile: alibaba\nschedulerName: &s confidential-scheduler\npreemptingSchedulerName: *s\n"
    )
    settings = load_settings(config)
    assert settings.scheduler_name == settings.preempting_scheduler_name == "confidential-scheduler"


def test_a_configuration_file_of_several_documents_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("profile: alibaba\n---\nprofile: intel\n")
    with pytest.raises(ConfigError, match="holds 2 YAML documents; one is expected"):
        load_settings(config)


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
