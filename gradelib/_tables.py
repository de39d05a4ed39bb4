"""The plain-text table the command line prints (``gradelib grade``'s summary, ``python -m gradelib.bench``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, and a rule under the header as wide as the table.

        >>> print(text_table(("name", "n"), [("ada", "1"), ("grace", "12")]))
        name   n
        ---------
        ada    1
        grace  12
    """
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
