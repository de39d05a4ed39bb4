"""Autograder checks, one module per topic and one check per exercise.

Each ``check_*`` function runs the student's code on seeded cases against the reference in
``gradelib.reference``, prints a ✓/✗ table with a diagnosis for each failure (never the solution),
and returns the score in points (see ``gradelib.checks._core`` for how nbgrader reads it).
"""

from gradelib.checks._core import CheckFailed, run_check
from gradelib.checks.answers import check_answer, check_answer_form, record_answer
# Imported here, with gradelib, so that derive binds SymPy's functions before any student code runs.
from gradelib.checks.derive import check_derivation, check_derivation_form

__all__ = ["CheckFailed", "check_answer", "check_answer_form", "check_derivation", "check_derivation_form",
           "record_answer", "run_check"]
