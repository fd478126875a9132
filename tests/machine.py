"""The machine tests and benchmarks run on: a free port, stopping a server, processes' CPU and memory, load,
percentiles.

Linux only (``/proc``), like the servers' own workers: what the benchmarks print beside their figures and
what the real-server tests need to start and stop a server.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, up to ``timeout`` seconds to exit (a server drains), then SIGKILL; reaped. Idempotent.
    Returns the exit code (``-9`` when it had to be killed).

    A process that leads its own process group (``start_new_session``) is killed with its whole group: a
    gunicorn worker that was still booting when its master forwarded SIGTERM never sees it (the master's
    handler, inherited across the fork, swallows it) and would otherwise go on serving after its master was
    killed, until it notices its parent changed. The group is killed before the leader is reaped, while
    its id cannot have been reused.
    """
    if process.poll() is not None:
        return process.returncode
    leads_group = os.getpgid(process.pid) == process.pid
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if leads_group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        return process.wait(timeout=timeout)


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: ``[0]`` is the state (field 3 of proc(5))."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0.0 once it is gone)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime and stime, fields 14 and 15


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (e.g. a gunicorn master's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    return cpu_seconds(pid) + sum(tree_cpu_seconds(child) for child in children(pid))


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of ``pid``, KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes), from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def load_average() -> str:
    """The load average over 1, 5 and 15 minutes, e.g. ``"0.92 0.80 0.75"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: Sequence[float], share: float) -> float:
    """The sample at rank ``share`` (0.99 for p99) of ``values``, unsorted or not; 0.0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def fetch(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection, then closed: (HTTP status, body)."""
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def fetch_chunked(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` as JSON with Transfer-Encoding: chunked (no Content-Length, 64 KiB per chunk) on a fresh
    connection, then closed: (HTTP status, body)."""
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    try:
        conn.request(
            "POST", path, body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
