"""Only the ``--e2e`` option, here because pytest reads options from initial conftests only.

Here it is known in every run (``python -m pytest --e2e`` included), so e2e tests outside tests/e2e can use
it too. Gating and fixtures live in tests/e2e/conftest.py; docs/e2e.md says how to build and run.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run the e2e tests against a real control plane (build it first: tests/e2e/build.sh)",
    )
