"""``confidential-pods doctor`` run as users run it (the installed command): ``-o json`` prints one JSON
object on every exit, errors included; an unreachable API server is one line; ``--wait`` waits and then
says what is not ready. The checks themselves: tests/operate/test_doctor.py; on a real control plane:
tests/e2e/test_doctor.py."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confidential_pods.errors import ConfigError
from confidential_pods.settings import Settings
from operate import commands
from operate.cluster import Unreachable
from operate.commands import wait_for
from operate.facts import Finding
from tests.fakeapi import FakeApiServer, write_kubeconfig

DOCTOR = str(Path(sys.executable).parent / "confidential-pods")


def doctor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCTOR, "doctor", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(kubeconfig of an API server nobody answers for, its URL)."""
    url = f"https://127.0.0.1:{closed_port()}"
    path = write_kubeconfig(tmp_path_factory.mktemp("unreachable") / "kubeconfig", url, token="t")
    return str(path), url


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:  # nothing installed: the webhook's checks fail
        yield server


@pytest.fixture
def files(tmp_path: Path, api: FakeApiServer) -> dict[str, str]:
    good, bad = tmp_path / "config.yaml", tmp_path / "typo.yaml"
    good.write_text("profile: alibaba\n")
    bad.write_text("profil: alibaba\n")
    return {"kubeconfig": str(api.kubeconfig(tmp_path)), "config": str(good), "typo": str(bad)}


def test_an_unreachable_api_server_is_one_json_object(unreachable: tuple[str, str]) -> None:
    kubeconfig, url = unreachable
    result = doctor("--kubeconfig", kubeconfig, "-o", "json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "error": f"cannot reach the API server at {url}: Connection refused",
        "exitCode": 2,
    }
    assert result.stderr == ""  # no urllib3 "Retrying" warnings


def test_an_unreachable_api_server_is_one_line(unreachable: tuple[str, str], files: dict[str, str]) -> None:
    kubeconfig, url = unreachable
    for extra in ((), ("--config", files["config"])):  # with --config too: no check "fails" nine times
        result = doctor("--kubeconfig", kubeconfig, *extra)
        assert (result.returncode, result.stdout) == (2, "")
        assert (
            result.stderr == f"confidential-pods: cannot reach the API server at {url}: Connection refused\n"
        )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(("--kubeconfig", "/nonexistent/kubeconfig"), "cannot load API server credentials",
                     id="kubeconfig-unreadable"),
        pytest.param(("--config", "{typo}"), "unknown configuration key(s) profil", id="bad-config"),
        pytest.param(("--config", "/nonexistent/config.yaml"), "configuration file", id="config-missing"),
        pytest.param(("--wait", "soon"), "--wait: 'soon' is not a duration", id="bad-wait"),
        pytest.param(("--wait", "2d"), "--wait: 2d is longer than 1d", id="wait-too-long"),
    ],
)  # fmt: skip
def test_every_error_is_a_json_object_with_the_exit_code(
    files: dict[str, str], args: tuple[str, ...], error: str
) -> None:
    args = tuple(a.format(**files) for a in args)
    if "--kubeconfig" not in args:
        args = ("--kubeconfig", files["kubeconfig"], *args)
    result = doctor(*args, "-o", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 2 and document["exitCode"] == 2
    assert error in document["error"] and set(document) == {"error", "exitCode"}
    text = doctor(*args)
    assert (text.returncode, text.stdout) == (2, "") and error in text.stderr


def test_wait_times_out_and_says_what_is_not_ready(files: dict[str, str]) -> None:
    """Nothing installed: after the wait, the failing checks, the exit code the worst check's."""
    result = doctor(
        "--kubeconfig", files["kubeconfig"], "--config", files["config"], "--wait", "2s", "-o", "json"
    )
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert document["ready"] is False and document["worst"] == "fail" and document["waitedSeconds"] >= 2
    statuses = {c["check"]: c["status"] for c in document["checks"]}
    assert statuses["webhook-configuration"] == statuses["webhook"] == "fail"
    assert statuses["route-epc-pods"] == "skipped"
    # no scheduler Deployment: the cluster's own scheduler, whose configuration is not read
    assert statuses["scheduler-mode"] == "ok"
    text = doctor("--kubeconfig", files["kubeconfig"], "--config", files["config"], "--wait", "1s")
    assert text.returncode == 2
    # the time is measured (a round under load takes longer than the wait): never asserted
    waited = re.search(r"not ready after (\d+)s: (.*) failing\n", text.stdout)
    assert waited is not None and int(waited.group(1)) >= 1, text.stdout
    assert waited.group(2) == "epc-resource, webhook-configuration, webhook, scheduler"


def test_wait_on_an_unreachable_api_server_times_out_with_the_error(unreachable: tuple[str, str]) -> None:
    kubeconfig, url = unreachable
    result = doctor("--kubeconfig", kubeconfig, "--wait", "1s", "-o", "json")
    assert result.returncode == 2 and result.stderr == ""
    document = json.loads(result.stdout)
    assert document["exitCode"] == 2 and set(document) == {"error", "exitCode"}
    waited = re.fullmatch(r"not ready after (\d+)s: (.*)", document["error"])  # the time is measured
    assert waited is not None and int(waited.group(1)) >= 1, document
    assert waited.group(2) == f"cannot reach the API server at {url}: Connection refused"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("24h", 86400.0), ("0s", 0.0)],
)
def test_wait_durations(text: str, seconds: float) -> None:
    assert wait_for(text) == seconds


@pytest.mark.parametrize("text", ["90", "5 minutes", "-5s", "1.5m", "25h", "9" * 5000 + "s"])
def test_wait_durations_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--wait"):
        wait_for(text)


SETTINGS = Settings()
FAILING = [Finding("webhook", "fail", "0 of 2 replicas ready")]
READY = [Finding("webhook", "ok", "2 of 2 replicas ready")]


@pytest.mark.parametrize(
    ("rounds", "seconds", "sleeps", "ready"),
    [
        pytest.param([READY], 60, [], True, id="ready-at-once"),
        pytest.param([FAILING, FAILING, READY], 60, [3.0, 3.0], True, id="ready-on-the-third-round"),
        pytest.param([FAILING] * 10, 7, [3.0, 3.0, 1.0], False, id="time-up"),
        pytest.param([Unreachable("down"), READY], 60, [3.0], True, id="api-server-comes-up"),
    ],
)
def test_wait_re_runs_the_checks_until_ready_or_time_is_up(
    monkeypatch: pytest.MonkeyPatch,
    rounds: list[Any],
    seconds: float,
    sleeps: list[float],
    ready: bool,
) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(duration: float) -> None:
        slept.append(duration)
        now[0] += duration

    def examine(args: argparse.Namespace) -> commands.Outcome:
        outcome = rounds.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return "file", SETTINGS, outcome, None

    monkeypatch.setattr(commands, "_examine", examine)
    args = argparse.Namespace(config_file="config.yaml", output="json")
    _, _, findings, waited = commands._examine_until_ready(args, seconds, lambda: now[0], sleep)
    assert slept == sleeps and waited == sum(sleeps)
    assert (findings == READY) == ready
