"""docs/install.md's newcomer transcript, without a cluster: it parses into the steps the on-node test replays
(tests/e2e/test_on_node_transcript.py), and the steps that read no cluster (``simulate``, ``helm template``)
replay here, on every run. The parser, the normalisation and the recorder on small documents."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e import transcript
from tests.e2e.transcript import (
    Replayed,
    Step,
    TranscriptError,
    difference,
    newcomer_directory,
    newcomer_environment,
    normalise,
    parse,
    record,
)

#: The steps that read no cluster, replayed here too: ``simulate`` and ``helm template`` alone (piped into
#: ``precheck``, it reads the cluster).
OFFLINE = ("confidential-pods simulate", "helm template")


def reads_no_cluster(step: Step) -> bool:
    return step.command.startswith(OFFLINE) and "precheck" not in step.command


def test_the_documented_transcript_goes_from_simulate_to_doctor() -> None:
    document = parse(transcript.DOCUMENT.read_text(encoding="utf-8"))
    commands = [step.command.split()[:2] for step in document.steps]
    assert commands[0] == ["confidential-pods", "simulate"]
    assert ["helm", "install"] in commands
    assert commands[-1] == ["confidential-pods", "doctor"]
    assert "--wait" in document.steps[-1].command and document.steps[-1].exit_code == 0
    assert any("precheck" in step.command for step in document.steps)
    assert set(document.files) == {"my-values.yaml"}
    for step in document.steps:
        assert step.output, f"line {step.line}: no output recorded for {step.command!r}"


def test_the_steps_without_a_cluster_replay(tmp_path: Path) -> None:
    markdown = transcript.DOCUMENT.read_text(encoding="utf-8")
    steps = parse(markdown).steps
    cwd = newcomer_directory(tmp_path)
    # No kubeconfig: a step that tried to read a cluster would fail instead of reading this machine's.
    env = newcomer_environment(KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    outputs = [
        transcript.replay(s, cwd, env) if reads_no_cluster(s) else Replayed(s.output, s.exit_code)
        for s in steps
    ]
    if os.environ.get(transcript.RECORD_ENV) == "record":
        transcript.DOCUMENT.write_text(record(markdown, outputs), encoding="utf-8")
        return
    assert len([s for s in steps if reads_no_cluster(s)]) == 2
    problems = [difference(s, o) for s, o in zip(steps, outputs, strict=True)]
    assert not any(problems), "\n\n".join(p for p in problems if p) + (
        f"\n(when the change is meant: {transcript.RECORD_ENV}=record python -m pytest "
        "tests/e2e/test_transcript_offline.py writes these steps' output into docs/install.md)"
    )


# --- the parser, the normalisation, the recorder ---------------------------------------------------------

DOCUMENT = """# Title

## A first install, as a newcomer sees it

```yaml file=values.yaml
a: 1
```

```console
$ echo one
one
```

Prose.

```console exit=2
$ printf 'two\\n' && \\
    exit 2
two
```

```sh
not a step
```

## Next

```console
$ not in the section
```
"""


def test_parse_reads_files_steps_and_exit_codes() -> None:
    parsed = parse(DOCUMENT)
    assert parsed.files == {"values.yaml": "a: 1\n"}
    assert parsed.steps == (
        Step("echo one", "one\n", 0, 9),
        Step("printf 'two\\n' && \\\n    exit 2", "two\n", 2, 16),
    )


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("# T\n", "no section"),
        ("x\n## A first install, as a newcomer sees it\n\ntext\n", "holds no console block"),
        ("x\n## A first install, as a newcomer sees it\n```console\necho\n```\n", "starts with '$ COMMAND'"),
        ("x\n## A first install, as a newcomer sees it\n```console\n$ a \\\n```\n", "ends with a backslash"),
        ("x\n## A first install, as a newcomer sees it\n```console exit=x\n$ a\n```\n", "is not a number"),
        ("x\n## A first install, as a newcomer sees it\n```console when=1\n$ a\n```\n", "unknown attribute"),
    ],
)
def test_parse_refuses_a_malformed_transcript(markdown: str, message: str) -> None:
    with pytest.raises(TranscriptError, match=re.escape(message)):
        parse(markdown)


def test_replay_and_record_write_back_what_ran(tmp_path: Path) -> None:
    steps = parse(DOCUMENT).steps
    outputs = [transcript.replay(step, tmp_path, os.environ) for step in steps]
    assert outputs == [Replayed("one\n", 0), Replayed("two\n", 2)]
    changed = record(DOCUMENT, [Replayed("uno\n", 0), Replayed("dos\nerror\n", 3)])
    assert parse(changed).steps == (
        Step("echo one", "uno\n", 0, 9),
        Step("printf 'two\\n' && \\\n    exit 2", "dos\nerror\n", 3, 16),
    )
    assert "$ not in the section\n```" in changed and "Prose." in changed
    assert record(DOCUMENT, outputs) == DOCUMENT


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("cluster: https://127.0.0.1:41234 (v1.37.2)", "cluster: https://127.0.0.1:5 (v1.37.2)"),
        ("LAST DEPLOYED: Sat Dec  5 05:10:00 2026", "LAST DEPLOYED: Mon Jan  4 00:00:01 2027"),
        ("ready after 41s\nok  web", "waiting: a failing\nwaiting: a, b failing\nready after 3s\nok  web"),
        ("ConfigMap confidential-pods-config-145d64e69d", "ConfigMap confidential-pods-config-7th7tck9f9"),
        ("valid until 2027-12-05", "valid until 2027-12-06"),
        ("(confidential-pods/templates/a.yaml:129:19): x", "(confidential-pods/templates/a.yaml:7:3): x"),
        ("ok  x   \n\n\n", "ok  x"),
        ("leader confidential-scheduler-5c8d9f7b64-x2k9p_0f8e4c1a-9b2d-4e6f-8a1c-3d5e7f9b1c2d", "leader "
         "confidential-scheduler-7d4b9c6f5-q7wzr_a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"),
    ],
)  # fmt: skip
def test_normalise_forgives_what_varies_between_runs(first: str, second: str) -> None:
    assert normalise(first) == normalise(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("cluster: https://127.0.0.1:41234", "cluster: https://10.0.0.1:41234"),
        ("ready after 41s", "not ready after 41s"),
        ("ok    webhook", "ok  webhook"),
        ("fail  webhook", "ok    webhook"),
        ("ConfigMap cp/confidential-pods-config-145d64e69d", "ConfigMap cp/other-config-145d64e69d"),
        ("REVISION: 1", "REVISION: 2"),
        ("(confidential-pods/templates/webhook.yaml:1:2)", "(confidential-pods/templates/rbac.yaml:1:2)"),
    ],
)  # fmt: skip
def test_normalise_forgives_nothing_else(first: str, second: str) -> None:
    assert normalise(first) != normalise(second)
