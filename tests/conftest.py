"""The ``--e2e`` option (here because pytest reads options from initial conftests only), and the CI rule
that a skip is a failure where e2e is required.

Gating lives in tests/e2e/gate.py, fixtures in tests/e2e/conftest.py; docs/e2e.md says how to build and run.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.e2e.gate import REQUIRE_ENV, required


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="require the e2e tests (fail instead of skipping without tests/e2e/build.sh; any skip fails)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Where e2e is required (CI), a skipped test is a failed test: CI must never pass without running it."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and required(item.config):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, and skips fail where e2e is required ({REQUIRE_ENV}=require or --e2e): {reason}"
        )
    return report
