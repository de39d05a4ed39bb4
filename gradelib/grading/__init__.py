"""Grading a class: nbgrader does the grading; this package makes it safe and robust at class scale.

One module per stage:

* ``batch``: ``grade_batch``, many submissions in the four stages below;
* ``stage``: find the submissions, inspect them (unreadable? locked cells touched?), copy them in;
* ``autograde``: grade each one in its own supervised nbgrader process, under ``Limits``;
* ``feedback``: feedback for every notebook the hidden-test seal finished;
* ``collect``: scores and findings into each student's ``Result`` with its ``Status`` (``result``);
* ``course``: nbgrader's course folder: the one ``gradebook(root)``, the released notebook;
* ``kernel``: the kernel nbgrader starts for every graded notebook (quick profile, sandboxed);
* ``sandbox``: the bubblewrap jail around that kernel;
* ``hidden``: nbgrader preprocessors that keep hidden tests and answer keys out of the kernel's reach
  and out of feedback;
* ``similarity``: winnowed-fingerprint copy detection (to the reference and between students), for a human;
* ``report``: the CSV and the summary table.
"""

from gradelib.grading.autograde import Limits, run_autograde, supervise
from gradelib.grading.batch import grade_batch
from gradelib.grading.course import gradebook
from gradelib.grading.kernel import GradingKernelManager, SandboxUnavailable
from gradelib.grading.report import summary_table, write_csv
from gradelib.grading.result import Result, Status
from gradelib.grading.stage import find_submissions, inspect_submission, shard

__all__ = ["GradingKernelManager", "Limits", "Result", "SandboxUnavailable", "Status", "find_submissions", "grade_batch",
           "gradebook", "inspect_submission", "run_autograde", "shard", "summary_table", "supervise", "write_csv"]
