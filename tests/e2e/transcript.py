"""A newcomer's transcript in the docs, read back as steps a test replays (issue 23, Proof).

The transcript is one section of a Markdown document (:data:`SECTION` of docs/install.md). In it:

- a fenced block whose info string is ``<language> file=NAME`` is a file the newcomer writes before the
  commands (e.g. ``yaml file=my-values.yaml``): the replay writes it, as written, into its working directory;
- a fenced ``console`` block is one step: its first line is ``$ COMMAND`` (a line ending in ``\\`` continues
  on the next, as in a shell), every following line is what the terminal showed (stdout and stderr as they
  came); ``console exit=N`` says the command exits N (0 otherwise). Markdown renderers show only the
  language, so readers see a plain terminal session.

:func:`normalise` is what the comparison forgives, and why; :func:`replay` runs one step as a shell would;
:func:`record` writes real outputs back into the document (``CONFIDENTIAL_PODS_TRANSCRIPT=record``), so that
what the document shows was copied from a run, never typed.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import REPO_ROOT
from tests.manifests.building import CHART, HELM_INSTALL_COMMAND, find_tool

DOCUMENT = REPO_ROOT / "docs" / "install.md"
SECTION = "## A first install, as a newcomer sees it"
RECORD_ENV = "CONFIDENTIAL_PODS_TRANSCRIPT"

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)

#: The alphabet of generated name suffixes (k8s.io/apimachinery's rand.SafeEncodeString: no vowels, no 0/1/3).
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
#: What truly varies between two runs of the same transcript, and is therefore not compared: each pattern is
#: replaced by its placeholder on both sides. Nothing else is forgiven.
NORMALISATIONS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"https://127\.0\.0\.1:\d+"),
        "https://127.0.0.1:<port>",
        "the e2e apiserver listens on a free port chosen at start-up",
    ),
    (
        re.compile(r"^LAST DEPLOYED: .*$", re.M),
        "LAST DEPLOYED: <date>",
        "Helm prints the wall-clock time of the install",
    ),
    (
        re.compile(r"\b(ready after|not ready after) \d+s\b"),
        r"\1 <duration>",
        "doctor --wait measures how long the pods took to start",
    ),
    (
        re.compile(r"^waiting: .* failing\n", re.M),
        "",
        "doctor --wait prints a progress line (stderr) each time the set of failing checks changes: which "
        "checks fail on the way, and in how many steps, depends on how fast the pods start",
    ),
    (
        re.compile(rf"\b(confidential-pods-webhook|confidential-scheduler)-{_SAFE}{{6,10}}-{_SAFE}{{5}}(?![a-z0-9])"),
        r"\1-<pod>",
        "the Deployments' pods are named with a random suffix (the scheduler's lease holder: pod name and a "
        "UUID)",
    ),
    (
        re.compile(r"(?<![0-9a-z])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-z])"),
        "<uuid>",
        "kube-scheduler's lease identity ends with a UUID drawn at start-up",
    ),
    (
        re.compile(r"\b(confidential-(?:pods|scheduler)-config)-[a-z0-9]{10}\b"),
        r"\1-<hash>",
        "the ConfigMaps' names end with a hash of their content, which changes with any configuration "
        "default or chart edit that the transcript is not about",
    ),
    (
        re.compile(r"(\(confidential-pods/templates/[\w.-]+\.(?:yaml|tpl|txt)):\d+:\d+\)"),
        r"\1:<line>:<column>)",
        "Helm's errors name the template line that raised them, which moves with any edit of the template "
        "above it; the file and the message are what the newcomer reads",
    ),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?)?\b"),
        "<date>",
        "dates (a certificate's expiry) follow the day of the run",
    ),
)


class TranscriptError(Exception):
    """The document's transcript section is missing or malformed (the message says where)."""


@dataclass(frozen=True)
class Step:
    """One command the newcomer typed, what the terminal showed, and its exit code."""

    command: str
    output: str
    exit_code: int
    #: The 1-based line of the block's opening fence in the document (for messages).
    line: int


@dataclass(frozen=True)
class Transcript:
    files: dict[str, str]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Replayed:
    output: str
    exit_code: int


def section(markdown: str, heading: str = SECTION) -> tuple[int, str]:
    """The offset of the section ``heading`` opens and its text (up to the next heading of its level)."""
    start = markdown.find(f"\n{heading}\n")
    if start < 0:
        raise TranscriptError(f"no section {heading!r}")
    start += 1
    level = heading.split(" ", 1)[0]
    following = re.compile(rf"^{re.escape(level)} ", re.M).search(markdown, start + len(heading))
    end = following.start() if following else len(markdown)
    return start, markdown[start:end]


def parse(markdown: str, heading: str = SECTION) -> Transcript:
    """The files and steps of the transcript under ``heading``, in the document's order."""
    offset, text = section(markdown, heading)
    files: dict[str, str] = {}
    steps: list[Step] = []
    for fence in _FENCE.finditer(text):
        line = markdown.count("\n", 0, offset + fence.start()) + 1
        language, *attributes = fence["info"].split()
        options = dict(_attribute(a, line) for a in attributes)
        if "file" in options:
            files[options["file"]] = fence["body"]
        elif language == "console":
            command, output = _split_step(fence["body"], line)
            exit_code = options.get("exit", "0")
            if not exit_code.isdigit():
                raise TranscriptError(f"line {line}: exit={exit_code} is not a number")
            steps.append(Step(command, output, int(exit_code), line))
    if not steps:
        raise TranscriptError(f"{heading!r} holds no console block")
    return Transcript(files, tuple(steps))


def _attribute(text: str, line: int) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or key not in ("file", "exit"):
        raise TranscriptError(f"line {line}: unknown attribute {text!r} (file=NAME, exit=N)")
    return key, value


def _split_step(body: str, line: int) -> tuple[str, str]:
    lines = body.splitlines()
    if not lines or not lines[0].startswith("$ "):
        raise TranscriptError(f"line {line}: a console block starts with '$ COMMAND'")
    command = [lines[0][2:]]
    rest = lines[1:]
    while command[-1].endswith("\\"):
        if not rest:
            raise TranscriptError(f"line {line}: the command's last line ends with a backslash")
        command.append(rest.pop(0))
    return "\n".join(command), "".join(f"{output}\n" for output in rest)


def normalise(text: str) -> str:
    """``text`` with :data:`NORMALISATIONS` applied, trailing blanks of each line and trailing empty lines
    dropped (the document's editor strips them; a terminal shows none)."""
    text = "".join(f"{line.rstrip()}\n" for line in text.splitlines())
    for pattern, placeholder, _why in NORMALISATIONS:
        text = pattern.sub(placeholder, text)
    return text.rstrip("\n") + "\n" if text.strip() else ""


def difference(step: Step, replayed: Replayed) -> str:
    """Empty when the replay shows what the document shows (after :func:`normalise`); else a unified diff
    and the exit codes."""
    expected, actual = normalise(step.output), normalise(replayed.output)
    problems = []
    if replayed.exit_code != step.exit_code:
        problems.append(f"exit code {replayed.exit_code}, the document says {step.exit_code}")
    if expected != actual:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), "docs/install.md", "replayed", lineterm=""
        )
        problems.append("\n".join(diff))
    if not problems:
        return ""
    return f"$ {step.command}  (docs/install.md line {step.line})\n" + "\n".join(problems)


def newcomer_directory(work: Path) -> Path:
    """Where a newcomer's commands run: a copy of charts/, as a fresh clone has it, and the transcript's files
    (the commands write ``built.yaml`` there, not into the checkout)."""
    shutil.copytree(CHART.parent, work / "charts")
    for name, text in parse(DOCUMENT.read_text(encoding="utf-8")).files.items():
        (work / name).write_text(text, encoding="utf-8")
    return work


def newcomer_environment(**extra: str) -> dict[str, str]:
    """The test's environment, with ``confidential-pods`` (this interpreter's package) and helm on PATH."""
    helm = find_tool("helm")
    if helm is None:
        pytest.fail(f"helm not found; install it with: {HELM_INSTALL_COMMAND}", pytrace=False)
    path = [str(Path(sys.executable).parent), str(Path(helm).parent), os.environ.get("PATH", "")]
    return {**os.environ, "PATH": os.pathsep.join(path), **extra}


def replay(step: Step, cwd: Path, env: Mapping[str, str], timeout: float = 600) -> Replayed:
    """Run the step's command with bash in ``cwd``, stdout and stderr interleaved as a terminal shows them."""
    done = subprocess.run(
        ["bash", "-c", step.command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Replayed(done.stdout, done.returncode)


def record(markdown: str, outputs: Sequence[Replayed], heading: str = SECTION) -> str:
    """``markdown`` with the transcript's console blocks showing ``outputs`` (one per step, in order) and
    their exit codes: what a real run printed, copied in by the program rather than by hand."""
    offset, text = section(markdown, heading)
    pending = list(outputs)
    consoles = [f for f in _FENCE.finditer(text) if f["info"].split()[:1] == ["console"]]
    if len(consoles) != len(pending):
        raise TranscriptError(f"{len(pending)} outputs for {len(consoles)} console blocks")
    pieces, last = [], 0
    for fence, replayed in zip(consoles, pending, strict=True):
        command, _ = _split_step(fence["body"], 0)
        info = "console" if replayed.exit_code == 0 else f"console exit={replayed.exit_code}"
        output = replayed.output
        if output and not output.endswith("\n"):
            output += "\n"
        pieces += [text[last : fence.start()], f"```{info}\n$ {command}\n{output}```"]
        last = fence.end()
    pieces.append(text[last:])
    return markdown[:offset] + "".join(pieces) + markdown[offset + len(text) :]
