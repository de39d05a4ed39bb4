"""Headline figures a notebook reports, collected by ``python -m gradelib.bench``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from gradelib._runtime import PROFILES, active_profile

METRICS_FILE_ENV = "GRADELIB_METRICS_FILE"

_reported: dict[str, dict] = {}


# A target given as one number was set for the default profile's budget, and a longer run (full) must meet it
# too; the quick profile trains too briefly for it, so there the figure is shown without a verdict.
PROFILES_OF_A_PLAIN_TARGET = ("default", "full")


def target_for_profile(target: "float | Mapping[str, float] | None", profile: str) -> float | None:
    """The target that applies in ``profile``: a plain number applies to the default and full profiles, a dict
    names its profiles (``{"quick": 0.8, "default": 0.99}``); None where no target was set for the profile."""
    if target is None:
        return None
    if isinstance(target, Mapping):
        unknown = set(target) - set(PROFILES)
        if unknown:
            raise ValueError(f"targets for unknown profiles {sorted(unknown)}; profiles are {PROFILES}")
        chosen = target.get(profile)
        return None if chosen is None else float(chosen)
    return float(target) if profile in PROFILES_OF_A_PLAIN_TARGET else None


def report_metric(name: str, value: float, target: "float | Mapping[str, float] | None" = None,
                  higher_is_better: bool = True) -> None:
    """Record one headline figure of a notebook and print it with the target of the active profile.

    Targets belong to the profile they were set for (:func:`target_for_profile`). In a profile without one
    the figure is printed with no verdict, and with a note of the profiles whose target it is.
    When ``GRADELIB_METRICS_FILE`` is set (the benchmark runner sets it for each notebook it executes),
    the figure is also written to that JSON file, so figures survive the kernel.
    """
    value = float(value)
    profile = active_profile()
    applies = target_for_profile(target, profile)
    entry = {"value": value, "target": applies, "higher_is_better": bool(higher_is_better)}
    _reported[name] = entry
    text = _describe(name, entry)
    if applies is None and target is not None:
        profiles = [p for p in PROFILES if target_for_profile(target, p) is not None]
        text += f"   (its target is set for the {' and '.join(profiles)} profile{'s' * (len(profiles) > 1)}, not {profile})"
    print(text)
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
