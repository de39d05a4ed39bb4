"""Headline figures a notebook reports, collected by ``python -m gradelib.bench``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

METRICS_FILE_ENV = "GRADELIB_METRICS_FILE"

_reported: dict[str, dict] = {}


def report_metric(name: str, value: float, target: float | None = None, higher_is_better: bool = True) -> None:
    """Record one headline figure of a notebook and print it with its target.

    When ``GRADELIB_METRICS_FILE`` is set (the benchmark runner sets it for each notebook it executes),
    the figure is also written to that JSON file, so figures survive the kernel.
    """
    value = float(value)
    entry = {"value": value, "target": None if target is None else float(target), "higher_is_better": bool(higher_is_better)}
    _reported[name] = entry
    print(_describe(name, entry))
    path = os.environ.get(METRICS_FILE_ENV)
    if path:
        file = Path(path)
        recorded = json.loads(file.read_text()) if file.exists() else {}
        recorded[name] = entry
        file.write_text(json.dumps(recorded, indent=2))


def reported_metrics() -> dict[str, dict]:
    """Every figure reported so far in this process."""
    return dict(_reported)


def target_met(entry: dict) -> bool | None:
    """Whether a reported figure meets its target (None when it has no target)."""
    if entry.get("target") is None:
        return None
    value = entry["value"]
    if not math.isfinite(value):
        return False
    return value >= entry["target"] if entry["higher_is_better"] else value <= entry["target"]


def _describe(name: str, entry: dict) -> str:
    text = f"[metric] {name} = {entry['value']:.4g}"
    met = target_met(entry)
    if met is not None:
        sign = ">=" if entry["higher_is_better"] else "<="
        text += f"   (target {sign} {entry['target']:.4g}: {'met' if met else 'NOT met'})"
    return text
