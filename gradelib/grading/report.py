"""What a batch leaves for the instructor: the CSV and the summary table."""

from __future__ import annotations

import csv
from pathlib import Path

from gradelib._tables import text_table
from gradelib.grading.result import Result, Status


def write_csv(results: list[Result], path: Path) -> None:
    cell_names = sorted({name for r in results for name in r.cells})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "status", "score", "max_score", "seconds", *cell_names, "sandbox",
                         "similarity", "similar_to", "notes"])
        for r in results:
            writer.writerow([r.student, Status(r.status).value, f"{r.score:g}", f"{r.max_score:g}", f"{r.seconds:g}",
                             *(f"{r.cells[c]:g}" if c in r.cells else "" for c in cell_names), r.sandbox,
                             "" if r.similarity is None else f"{r.similarity:.2f}", r.similar_to, "; ".join(r.notes)])


def summary_table(results: list[Result]) -> str:
    """One row per student, then how many ended in each status ("27 ok, 1 out-of-memory")."""
    table = text_table(("student", "status", "score", "seconds", "notes"),
                       [(r.student, Status(r.status).value, f"{r.score:g} / {r.max_score:g}", f"{r.seconds:g}",
                         "; ".join(r.notes)[:70]) for r in results])
    counts = {status: sum(r.status == status for r in results) for status in Status}
    return table + "\n" + ", ".join(f"{n} {status.value}" for status, n in counts.items() if n)
