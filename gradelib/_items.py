"""What a notebook grades, read from its nbgrader markup: the graded items, their kind, and the learning
objectives each one exercises.

A graded cell's id names its kind: ``code_…`` (an implementation, checked on random cases), ``derive_…`` (a
derivation step, a SymPy expression checked for equivalence), ``predict_…`` (a worked example's key number, asked
before the notebook computes it) or ``concept_…`` (a question that needs reasoning). The objectives cell (under
"## 1. Learning objectives") ends each numbered objective with ``→`` and the ids of the items that exercise it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("code", "derive", "predict", "concept")
OBJECTIVES_HEADING = "## 1. Learning objectives"
_OBJECTIVE = re.compile(r"^\s*(\d+)\.\s+(.*?)(?:\s+→\s+(.*))?$", re.S)
_NUMBERED = re.compile(r"^\s*\d+\.\s")
_GRADE_ID = re.compile(r"`([A-Za-z0-9_-]+)`")


@dataclass(frozen=True)
class Item:
    grade_id: str
    points: float

    @property
    def kind(self) -> str | None:
        prefix = self.grade_id.split("_", 1)[0]
        return prefix if prefix in KINDS and "_" in self.grade_id else None


def graded_items(nb) -> list[Item]:
    """Every graded cell (nbgrader ``grade: true``), in notebook order."""
    items = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            items.append(Item(meta["grade_id"], float(meta.get("points") or 0)))
    return items


def objectives(nb) -> dict[str, list[str]]:
    """Each numbered learning objective (its text) -> the grade ids it maps to (empty when it maps to none)."""
    cell = next((c for c in nb.cells if c.cell_type == "markdown" and c.source.lstrip().startswith(OBJECTIVES_HEADING)), None)
    if cell is None:
        return {}
    blocks: list[str] = []  # one per numbered objective, its continuation lines joined on
    for line in cell.source.splitlines():
        if _NUMBERED.match(line):
            blocks.append(line.strip())
        elif blocks and line.strip() and line.startswith((" ", "\t")):
            blocks[-1] += " " + line.strip()
        elif blocks and not line.strip():
            blocks.append("")  # a blank line ends the list item
    mapped = {}
    for block in filter(None, blocks):
        match = _OBJECTIVE.match(block)
        mapped[f"{match.group(1)}. {' '.join(match.group(2).split())}"] = _GRADE_ID.findall(match.group(3) or "")
    return mapped


def summary(name: str, nb) -> str:
    """The instructor's view of one assignment: its items and points by kind, and the objective map."""
    items = graded_items(nb)
    total = sum(item.points for item in items)
    lines = [f"{name}: {len(items)} graded items, {total:g} points", "",
             f"{'kind':<9} {'items':>5} {'points':>6}"]
    for kind in (*KINDS, None):
        chosen = [item for item in items if item.kind == kind]
        if chosen:
            lines.append(f"{kind or '(unnamed)':<9} {len(chosen):>5} {sum(i.points for i in chosen):>6g}")
    lines.append("")
    width = max((len(item.grade_id) for item in items), default=10)
    lines += [f"  {item.grade_id:<{width}}  {item.points:g}" for item in items]
    mapped = objectives(nb)
    if mapped:
        lines += ["", "learning objectives → graded items"]
        for objective, ids in mapped.items():
            shown = objective if len(objective) <= 70 else objective[:67] + "..."
            lines.append(f"  {shown}\n      → {', '.join(ids) if ids else '(none)'}")
    return "\n".join(lines)
