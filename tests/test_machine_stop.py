"""tests/machine.py ``stop``: a server stopped by the tests leaves nothing running, even a child that missed
the SIGTERM its parent forwarded (a gunicorn worker still booting): nothing answers once stop returns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.machine import stop

#: A leader that ignores SIGTERM and a child of it that ignores SIGTERM too and writes its pid.
TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_group_leader_is_killed_with_the_children_that_ignored_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    leader = subprocess.Popen([sys.executable, "-c", TREE, str(pid_file)], start_new_session=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())

    assert stop(leader, timeout=1.0) == -9

    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), f"child {child} still running after stop"


def test_a_process_outside_its_own_group_is_killed_alone() -> None:
    ignoring = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    )
    process = subprocess.Popen([sys.executable, "-c", ignoring + "time.sleep(60)"], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert os.getpgid(process.pid) != process.pid  # the test runner's group: never killed as a group
    assert stop(process, timeout=0.5) == -9
    assert stop(process) == -9  # idempotent
    process.stdout.close()
