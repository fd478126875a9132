"""Whether the e2e tests run, skip, or fail — one rule for every e2e test in tests/.

- The control-plane binaries are built (``tests/e2e/build.sh``): e2e tests run, in every ``python -m pytest``.
- They are not built, on a developer's machine: e2e tests **skip**, with a message saying what to install
  (Go, when there is no ``go`` command) or what to run (``tests/e2e/build.sh``).
- e2e is *required* (``.ci/run`` sets ``CONFIDENTIAL_PODS_E2E=require``; ``pytest --e2e`` does the same): a
  missing binary **fails** the test, and tests/conftest.py turns any skip into a failure, so CI can never
  pass without having run them.

``-m "not e2e"`` leaves the e2e tests out of a run.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

from tests.e2e.harness import BUILD_SCRIPT, Binaries, BinariesMissingError

REQUIRE_ENV = "CONFIDENTIAL_PODS_E2E"
#: What a developer without Go needs (docs/e2e.md has the details).
INSTALL_HINT = (
    "install Go 1.26 or newer (https://go.dev/doc/install; `go version` must work and the Go module proxy "
    "be reachable), then run tests/e2e/build.sh once (about 10 minutes, ~4 GB of Go caches; docs/e2e.md)"
)


def required(config: pytest.Config) -> bool:
    """True when e2e tests must run (CI): ``--e2e`` or ``CONFIDENTIAL_PODS_E2E=require``."""
    return bool(config.getoption("e2e", default=False)) or os.environ.get(REQUIRE_ENV) == "require"


def missing_reason(exc: BinariesMissingError) -> str:
    """Why the e2e tests cannot run here, and what to do about it."""
    if shutil.which("go") is None:
        return f"e2e tests need the control-plane binaries, built from Go modules: {INSTALL_HINT}"
    return f"{exc} (once: about 10 minutes and ~4 GB of Go caches)"


def unavailable(config: pytest.Config, reason: str) -> NoReturn:
    """Skip the test for ``reason`` (what this machine lacks); fail instead where e2e is required."""
    if required(config):
        pytest.fail(f"{reason} [e2e is required here]", pytrace=False)
    pytest.skip(reason)


def binaries(config: pytest.Config) -> Binaries:
    """The control-plane binaries; skip the test without them (fail when e2e is required)."""
    try:
        return Binaries.locate()
    except BinariesMissingError as exc:
        reason = missing_reason(exc)
        if required(config):
            pytest.fail(f"{reason} [{BUILD_SCRIPT}; e2e is required here]", pytrace=False)
        pytest.skip(reason)
