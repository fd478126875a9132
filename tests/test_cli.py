"""The command line as a whole (issue 23, item 8): ``--log-level`` before or after any command, a group
without a command prints its own help, shell completion through argcomplete. Run through the installed
command, as users run it."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from confidential_pods.cli import _commands, build_parser, main
from tests.commands import cli, kubectl_plugin

GROUPS = [(["webhook"], "confidential-pods webhook"), (["extender"], "confidential-pods extender"),
          (["certs"], "confidential-pods certs"), ([], "confidential-pods")]  # fmt: skip


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.mark.parametrize(("args", "prog"), GROUPS, ids=[prog for _, prog in GROUPS])
def test_a_group_without_a_command_prints_its_own_help(args: list[str], prog: str) -> None:
    done = run(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"usage: {prog} ") and "COMMAND" in done.stderr


def test_every_command_takes_log_level() -> None:
    parser = build_parser()
    for command in _commands(parser):
        assert any("--log-level" in action.option_strings for action in command._actions), command.prog


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["webhook", "serve", "--cert", "c", "--key", "k"], "INFO"),
        (["--log-level", "ERROR", "webhook", "serve", "--cert", "c", "--key", "k"], "ERROR"),
        (["webhook", "serve", "--cert", "c", "--key", "k", "--log-level", "DEBUG"], "DEBUG"),
        (["--log-level", "ERROR", "simulate", "--log-level", "WARNING"], "WARNING"),  # the nearer one wins
        (
            ["certs", "generate", "--service", "s", "--namespace", "n", "--out", "x", "--log-level", "DEBUG"],
            "DEBUG",
        ),
    ],
)
def test_log_level_before_or_after_the_command(args: list[str], level: str) -> None:
    assert build_parser().parse_args(args).log_level == level


def test_log_level_after_the_command_takes_effect() -> None:
    """simulate's binds in ledger mode (the extender's) log at DEBUG: shown only when asked, before or after
    the command."""
    after = run("simulate", "--mode", "ledger", "--log-level", "DEBUG")
    assert after.returncode == 0 and " DEBUG extender.verbs: bound " in after.stderr
    assert (
        " DEBUG extender.verbs: bound " in run("--log-level", "DEBUG", "simulate", "--mode", "ledger").stderr
    )
    assert " DEBUG " not in run("simulate", "--mode", "ledger").stderr


def test_an_unknown_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--log-level", "LOUD"])
    assert exited.value.code == 2 and "invalid choice: 'LOUD'" in capsys.readouterr().err


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "tcsh"])
def test_completion_prints_the_hook(shell: str) -> None:
    done = run("completion", shell)
    assert done.returncode == 0 and "confidential-pods" in done.stdout
    assert "kubectl-confidential_pods" in done.stdout


def complete(command: list[str], line: str, tmp_path: Path) -> list[str]:
    """What the shell hook gets back for ``line`` (argcomplete's own protocol)."""
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"}  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return sorted(word.strip() for word in out.read_text().splitlines())


def test_completion_answers_the_shell(tmp_path: Path) -> None:
    assert complete(cli(), "confidential-pods web", tmp_path) == ["webhook"]
    assert complete(cli(), "confidential-pods webhook serve --log-l", tmp_path) == ["--log-level"]
    assert complete(cli(), "confidential-pods simulate --strategy M", tmp_path) == ["MostAllocated"]
    plugin = kubectl_plugin()
    if Path(plugin[0]).is_file():
        assert complete(plugin, "kubectl-confidential_pods --conte", tmp_path) == ["--context"]


def test_the_help_of_every_group_is_reachable() -> None:
    for command in _commands(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
            assert command.get_default("help_of") is command
