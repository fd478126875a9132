"""Plain-text tables and EPC bars for the commands that print to a terminal (``simulate``, the kubectl
plugin). Cells must already be printable (:func:`confidential_pods.documents.printable`)."""

from __future__ import annotations

from collections.abc import Sequence

#: Cells of a bar.
BAR_WIDTH = 30


def table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as lines with columns padded to the widest cell (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def bar(before: int, added: int, capacity: int) -> str:
    """``[###++....]``: ``before`` as ``#``, then ``added`` as ``+``, the rest of ``capacity`` as ``.``."""
    if capacity <= 0:
        return "[" + " " * BAR_WIDTH + "]"
    old = min(BAR_WIDTH, round(before * BAR_WIDTH / capacity))
    new = min(BAR_WIDTH - old, round((before + added) * BAR_WIDTH / capacity) - old)
    return "[" + "#" * old + "+" * max(new, 0) + "." * (BAR_WIDTH - old - max(new, 0)) + "]"
