"""Grading a class: nbgrader does the grading; this package makes it safe and robust at class scale.

One module per stage:

* ``kernel``: the kernel nbgrader starts for every graded notebook (quick profile, sandboxed);
* ``sandbox``: the bubblewrap jail around that kernel;
* ``hidden``: nbgrader preprocessors that keep hidden tests and answer keys out of the kernel's reach
  and out of feedback;
* ``batch``: many submissions, each in its own supervised process;
* ``similarity``: winnowed-fingerprint copy detection (to the reference and between students), for a human;
* ``report``: the CSV and the summary table.
"""

from gradelib.grading.batch import (STATUSES, Limits, Result, find_submissions, grade_batch, inspect_submission,
                                    locked_cells, run_autograde, shard, supervise)
from gradelib.grading.kernel import GradingKernelManager, SandboxUnavailable
from gradelib.grading.report import summary_table, write_csv

__all__ = ["STATUSES", "GradingKernelManager", "Limits", "SandboxUnavailable", "Result", "find_submissions", "grade_batch",
           "inspect_submission", "locked_cells", "run_autograde", "shard", "summary_table", "supervise", "write_csv"]
