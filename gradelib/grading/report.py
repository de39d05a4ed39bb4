"""What a batch leaves for the instructor: the CSV and the summary table."""

from __future__ import annotations

import csv
from pathlib import Path

from gradelib.grading.batch import STATUSES, Result


def write_csv(results: list[Result], path: Path) -> None:
    cell_names = sorted({name for r in results for name in r.cells})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "status", "score", "max_score", "seconds", *cell_names, "sandbox",
                         "similarity", "similar_to", "notes"])
        for r in results:
            writer.writerow([r.student, r.status, f"{r.score:g}", f"{r.max_score:g}", f"{r.seconds:g}",
                             *(f"{r.cells[c]:g}" if c in r.cells else "" for c in cell_names), r.sandbox,
                             "" if r.similarity is None else f"{r.similarity:.2f}", r.similar_to, "; ".join(r.notes)])


def summary_table(results: list[Result]) -> str:
    rows = [("student", "status", "score", "seconds", "notes")]
    rows += [(r.student, r.status, f"{r.score:g} / {r.max_score:g}", f"{r.seconds:g}", "; ".join(r.notes)[:70]) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items() if n))
    return "\n".join(lines)
