"""Where code runs and how reproducible it is: device choice, seeding, profiles and budgets."""

from __future__ import annotations

import os
import random
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch

PROFILES = ("quick", "default", "full")


def device() -> torch.device:
    """The accelerator if there is one (CUDA), otherwise the CPU.

    Every notebook moves its models and data here, so the same notebook runs unchanged on a laptop,
    in CI and on a GPU runtime. ``GRADELIB_DEVICE=cpu`` keeps a GPU machine on the CPU (to compare);
    ``GRADELIB_DEVICE=cuda`` insists on the GPU, so a GPU job without one fails instead of quietly
    running on the CPU.
    """
    wanted = os.environ.get("GRADELIB_DEVICE", "").strip().lower()
    if wanted and wanted not in ("cpu", "cuda"):
        raise ValueError(f"GRADELIB_DEVICE={wanted!r} is not 'cpu' or 'cuda'")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("GRADELIB_DEVICE=cuda, but torch sees no CUDA device (is the CUDA build of torch installed?)")
    if wanted == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def active_profile() -> str:
    """The compute profile in force: ``quick``, ``default`` or ``full``.

    ``GRADELIB_PROFILE`` wins when set. Otherwise the profile is ``quick`` under nbgrader
    (which sets ``NBGRADER_EXECUTION`` while it autogrades), because grading must be fast and
    must not depend on a model training to convergence, and ``default`` everywhere else.
    """
    chosen = os.environ.get("GRADELIB_PROFILE", "").strip().lower()
    if chosen:
        if chosen not in PROFILES:
            raise ValueError(f"GRADELIB_PROFILE={chosen!r} is not one of {PROFILES}")
        return chosen
    return "quick" if os.environ.get("NBGRADER_EXECUTION") else "default"


class Budget(Mapping[str, Any]):
    """Read-only training budget for the active profile; read fields as attributes."""

    def __init__(self, profile: str, values: Mapping[str, Any]):
        self._values = MappingProxyType(dict(values))
        self.profile = profile

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"this budget has no field {name!r}; it has {sorted(self._values)}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Budget[{self.profile}]({fields})"


def budget(*, quick: Mapping[str, Any], default: Mapping[str, Any], full: Mapping[str, Any]) -> Budget:
    """Pick a notebook's training budget for the active profile.

    A notebook declares all three budgets side by side, so a reader sees what a GPU run changes,
    and the profile (never a hand-edited constant) decides which one runs::

        budget = gradelib.budget(quick=dict(steps=100), default=dict(steps=1500), full=dict(steps=6000))
        for step in range(budget.steps): ...
    """
    per_profile = {"quick": quick, "default": default, "full": full}
    keys = {name: set(values) for name, values in per_profile.items()}
    if len({frozenset(k) for k in keys.values()}) != 1:
        raise ValueError(f"the three budgets must have the same fields, got {keys}")
    profile = active_profile()
    return Budget(profile, per_profile[profile])
