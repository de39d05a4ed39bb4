"""Batch autograding that survives what students submit: a thin layer over nbgrader.

nbgrader does the grading (restoring locked cells, executing, scoring, the gradebook, feedback).
``grade_batch`` adds what a large class needs around it, in four stages, one module each:

1. **stage** (``stage``): submissions are inspected before grading: unreadable JSON is reported, not
   crashed on, and edited or deleted locked cells are flagged as ``tampered`` (nbgrader restores them, so
   the score is as if they had not been touched); the readable ones are copied into ``submitted/``;
2. **grade** (``autograde``): every submission is autograded in its own ``nbgrader autograde --student``
   process, several at a time, each under a wall-clock limit and a memory cap enforced from outside (the
   whole process tree is killed, so a kernel that ignores interrupts cannot hang the batch). The kernel
   (``kernel``) runs in the ``quick`` profile and cannot tell it is being graded (``NBGRADER_EXECUTION`` is
   removed from its environment), in a bubblewrap sandbox (``sandbox``); without a working bwrap the batch
   refuses to start unless the instructor passes ``sandboxed=False`` (``--no-sandbox``);
3. **feedback** (``feedback``): HTML for everyone whose notebook the hidden-test seal (``hidden``) finished;
4. **collect** (``collect``): scores from the gradebook, and what the seal found (quoted hidden source,
   forged results) as notes; a note makes the status ``tampered``.

Then ``similarity`` flags copied code. One ``Status`` per student (``result``) goes into a CSV next to the
scores, with the sandbox used and the highest code similarity (``report``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from gradelib.grading import sandbox
from gradelib.grading.autograde import Limits, grade_submissions
from gradelib.grading.collect import collect_results
from gradelib.grading.course import released_notebook
from gradelib.grading.feedback import generate_feedback
from gradelib.grading.kernel import SandboxUnavailable
from gradelib.grading.result import Result
from gradelib.grading.stage import stage_submissions


def grade_batch(root: Path, assignment: str, submissions: dict[str, Path], *, workers: int = 1,
                limits: Limits | None = None, progress: bool = True, sandboxed: bool = True,
                similarity_html: Path | None = None) -> list[Result]:
    """Autograde ``submissions`` (student -> notebook) in the course at ``root``; one Result per student.

    Refuses (SandboxUnavailable) when ``sandboxed`` and no working bwrap exists. ``similarity_html``:
    where to write the page of flagged code similarities (to the reference and between students)."""
    if sandboxed and sandbox.find_bwrap() is None:
        raise SandboxUnavailable(sandbox.INSTALL_HINT)
    released = nbformat.read(released_notebook(root, assignment), as_version=4)
    jail = sandbox.jail(sandboxed)
    results = {student: Result(student, sandbox=jail) for student in submissions}

    staged = stage_submissions(root, assignment, submissions, released, results)
    grade_submissions(root, assignment, sorted(staged), results, workers=workers, limits=limits or Limits(),
                      sandboxed=sandboxed, progress=progress)
    sealed = generate_feedback(root, assignment, sorted(staged))
    collect_results(root, assignment, results, sealed)

    from gradelib.grading import similarity  # copydetect: imported only by a batch, not by every nbgrader process

    similarity.flag_results(results, staged, released, similarity_html, title=f"Similarity report: {assignment}")
    return [results[s] for s in sorted(results)]
