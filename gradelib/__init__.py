"""gradelib: reference implementations, datasets and autograder checks for the course
"Generative AI from first principles".

The package mirrors the course: ``gradelib.reference.<topic>`` holds the readable reference code
that later notebooks build on, ``gradelib.checks.<topic>`` the checks behind each graded exercise,
and ``gradelib.data`` the offline datasets.
"""

import importlib

from gradelib._runtime import PROFILES, Budget, active_profile, budget, device, seed_everything
from gradelib.metrics import report_metric
from gradelib.timing import median_seconds

# Imported for its effect: it binds the checks' primitives before any student code runs.
importlib.import_module("gradelib.checks._core")

__version__ = "0.1.0"

__all__ = [
    "PROFILES",
    "Budget",
    "active_profile",
    "budget",
    "device",
    "median_seconds",
    "report_metric",
    "seed_everything",
]
