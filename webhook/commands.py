"""Subcommands of this component (registered into the ``confidential-pods`` parser)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    """Add this component's subcommands; filled in by the component's issue."""
