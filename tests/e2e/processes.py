"""Processes of the e2e control plane: start with a log file, wait for readiness, stop.

Plain subprocess management, no Kubernetes knowledge: :mod:`tests.e2e.harness` builds on it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.machine import stop


class HarnessError(Exception):
    """The control plane could not be started or used."""


class StartupError(HarnessError):
    """A control-plane process exited or did not become ready in time; the message has its log's tail."""


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll ``condition`` until it is true; raise :class:`HarnessError` after ``timeout`` seconds.

    ``alive`` is called each round and may raise (e.g. :meth:`Process.check_alive`) to stop waiting early.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if condition():
            return
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Process:
    """A control-plane process with its output in a log file."""

    name: str
    args: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes]
    #: Where this run's output starts in ``log_path`` (a restarted process appends to the same log).
    log_offset: int = 0

    @classmethod
    def start(
        cls, name: str, args: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> Process:
        """Start ``args`` in its own session with stdout and stderr appended to ``<log_dir>/<name>.log``."""
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        return cls(name=name, args=tuple(args), log_path=log_path, popen=popen, log_offset=offset)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        """What this run of the process has logged so far (earlier runs' output excluded)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of this run's log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`StartupError` with the log's tail if the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise StartupError(
                f"{self.name} exited with code {code}; log {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        stop(self.popen, timeout)
