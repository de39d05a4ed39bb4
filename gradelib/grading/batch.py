"""Batch autograding that survives what students submit: a thin layer over nbgrader.

nbgrader does the grading (restoring locked cells, executing, scoring, the gradebook, feedback).
This module adds what a large class needs around it:

* every submission is autograded in its own ``nbgrader autograde --student`` process, several at a
  time, each under a wall-clock limit and a memory cap enforced from outside (the whole process tree
  is killed, so a kernel that ignores interrupts cannot hang the batch);
* submissions are inspected before grading: unreadable JSON is reported, not crashed on, and edited
  or deleted locked cells are flagged as ``tampered`` (nbgrader restores them, so the score is as if
  they had not been touched);
* the kernel runs in the ``quick`` profile and cannot tell it is being graded: ``NBGRADER_EXECUTION``
  is removed from its environment, so code that checks for it behaves exactly as it did for the student;
* the kernel runs in a bubblewrap sandbox (``gradelib.grading.sandbox``); without a working bwrap the
  batch refuses to start unless the instructor passes ``sandbox=False`` (``--no-sandbox``);
* what the hidden-test seal found (``gradelib.grading.hidden``: quoted hidden source, forged results)
  becomes a note, and a note makes the status ``tampered``;
* one status per student (``ok``, ``timeout``, ``kernel-died``, ``unreadable``, ``tampered``) goes
  into a CSV next to the scores, with the sandbox used and the highest code similarity, and feedback
  HTML is generated for everyone who was graded.

The batch runs in four stages: stage (inspect and copy the submissions), grade (one supervised nbgrader
process each), feedback, collect (scores and findings from the gradebook and the autograded notebooks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil

from gradelib.grading import sandbox
from gradelib.grading.kernel import MEMORY_VARIABLE, SANDBOX_VARIABLE, SandboxUnavailable

STATUSES = ("ok", "timeout", "kernel-died", "unreadable", "tampered")


@dataclass
class Limits:
    cell_timeout: int = 120        # seconds one cell may run before nbgrader interrupts it
    notebook_timeout: int = 900    # seconds for the whole notebook before the process tree is killed
    memory_gb: float = 4.0         # resident memory of the grading process tree before it is killed


@dataclass
class Result:
    student: str
    status: str = "ok"
    score: float = 0.0
    max_score: float = 0.0
    seconds: float = 0.0
    cells: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sandbox: str = "bwrap"                 # "bwrap+cgroups", "bwrap" (rlimits only), or "none" (--no-sandbox)
    similarity: float | None = None        # highest similarity of the student's own exercise code ...
    similar_to: str = ""                   # ... and to what ("sdpa ~ gradelib.reference"): a flag, not a score


# ------------------------------------------------------------------------------------------------
# Before grading: can we read it, and were locked cells touched?


def locked_cells(nb) -> dict[str, str]:
    """grade_id -> source of every locked cell (tests and read-only instructions) of a notebook."""
    cells = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("locked") or (meta.get("grade") and not meta.get("solution")):
            cells[meta.get("grade_id", "")] = cell.source
    return cells


def inspect_submission(path: Path, released) -> tuple[object | None, list[str]]:
    """(notebook or None if unreadable, list of tampering findings) for one submitted file."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # truncated JSON, wrong format, not a notebook at all
        return None, [f"unreadable: {type(error).__name__}: {str(error)[:200]}"]
    submitted = locked_cells(nb)
    findings = []
    for grade_id, source in locked_cells(released).items():
        if grade_id not in submitted:
            findings.append(f"locked cell {grade_id} was deleted (restored for grading)")
        elif submitted[grade_id].strip() != source.strip():
            findings.append(f"locked cell {grade_id} was edited (restored for grading)")
    return nb, findings


# ------------------------------------------------------------------------------------------------
# Grading one submission in its own process tree


def _nbgrader_command(assignment: str, student: str, limits: Limits) -> list[str]:
    return [
        sys.executable, "-m", "nbgrader", "autograde", assignment,
        f"--student={student}", "--create", "--force", "--log-level=INFO",
        f"--Execute.timeout={limits.cell_timeout}",
        "--Execute.kernel_manager_class=gradelib.grading.GradingKernelManager",
        "--OverwriteCells.add_missing_cells=True",
    ]


def _tree_memory(process: psutil.Process) -> int:
    """Memory of a process tree, each page counted once: the sum of proportional set sizes (PSS).

    Summing resident sizes would count a forked child's copy-on-write pages again for every child, so a
    kernel that forks (DataLoader workers, or a fork bomb already stopped by the sandbox) would look many
    times its size. RSS where PSS cannot be read."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.AccessDenied:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        except psutil.Error:
            pass
    return total


def _kill_tree(process: psutil.Process) -> None:
    procs = [process, *process.children(recursive=True)]
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def supervise(command: list[str], cwd: Path, env: dict, log, limits: Limits) -> tuple[str | None, str, int]:
    """Run ``command`` in its own session; kill its whole process tree if it outruns the notebook timeout
    or its resident memory passes the cap. Returns (status or None, note, return code)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    watched = psutil.Process(process.pid)
    start, status, note = time.monotonic(), None, ""
    while process.poll() is None:
        if time.monotonic() - start > limits.notebook_timeout:
            status, note = "timeout", f"killed after {limits.notebook_timeout} s"
        elif _tree_memory(watched) > limits.memory_gb * 2**30:
            status, note = "kernel-died", f"killed: memory above {limits.memory_gb:g} GB"
        if status:
            _kill_tree(watched)
            break
        time.sleep(0.2)
    return status, note, process.wait()


def run_autograde(root: Path, assignment: str, student: str, limits: Limits, log_dir: Path,
                  threads: int | None = None, sandboxed: bool = True) -> tuple[str, str]:
    """Autograde one student under the limits; returns (status, note).

    threads caps the math libraries' threads in the kernel: parallel workers that each use every core
    oversubscribe the machine, and small torch workloads then slow down several times over.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env[SANDBOX_VARIABLE] = "bwrap" if sandboxed else "off"
    env[MEMORY_VARIABLE] = f"{limits.memory_gb:g}"
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log_path = log_dir / f"{student}.log"
    with open(log_path, "w") as log:
        status, note, returncode = supervise(_nbgrader_command(assignment, student, limits), root, env, log, limits)
    if status:
        # Killed mid-way, nbgrader leaves the notebook as restored for execution, hidden tests and all:
        # no feedback may be made from it (nbgrader removes such a folder itself when it fails on its own).
        shutil.rmtree(root / "autograded" / student / assignment, ignore_errors=True)
        return status, note
    text = log_path.read_text(errors="replace")
    failed = returncode != 0 or "error processing assignment" in text.lower()
    if "DeadKernelError" in text or "kernel died" in text.lower():
        return "kernel-died", "the kernel died while running the notebook"
    if failed and "CellTimeoutError" in text:
        # A cell outran --cell-timeout and ignored the interrupt, so nbgrader gave up on the notebook.
        return "timeout", f"a cell ignored the interrupt after {limits.cell_timeout} s"
    if failed:
        return "kernel-died", f"nbgrader could not grade it (see {log_path.name})"
    return "ok", ""


# ------------------------------------------------------------------------------------------------
# The batch


def find_submissions(directory: Path, assignment: str) -> dict[str, Path]:
    """student -> notebook, from nbgrader's layout (DIR/student/assignment/assignment.ipynb) or DIR/student.ipynb."""
    found = {}
    for path in sorted(directory.glob(f"*/{assignment}/{assignment}.ipynb")):
        found[path.parent.parent.name] = path
    for path in sorted(directory.glob("*.ipynb")):
        found.setdefault(path.stem, path)
    return found


def shard(students: list[str], spec: str | None) -> list[str]:
    """Students of shard ``i/N`` (1-based): every N-th student of the sorted list, starting at the i-th."""
    if not spec:
        return students
    index, count = (int(part) for part in spec.split("/"))
    if not 1 <= index <= count:
        raise ValueError(f"--shard must be i/N with 1 <= i <= N, got {spec}")
    return sorted(students)[index - 1::count]


def _read_scores(root: Path, assignment: str, result: Result) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        result.max_score = float(gradebook.find_assignment(assignment).max_score)
        try:
            submission = gradebook.find_submission_notebook(assignment, assignment, result.student)
        except MissingEntry:
            return
        result.cells = {grade.name: float(grade.score) for grade in submission.grades}
        result.score = float(submission.score)


def _clear_previous(root: Path, assignment: str, student: str) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        try:
            gradebook.remove_submission(assignment, student)
        except MissingEntry:
            pass
    for step in ("autograded", "feedback"):
        shutil.rmtree(root / step / student / assignment, ignore_errors=True)


def _ensure_released(root: Path, assignment: str) -> Path:
    """The released notebook, generating it (and the gradebook's record of its cells) when missing."""
    from nbgrader.api import Gradebook, MissingEntry

    from gradelib import _notebooks

    released_path = root / "course" / assignment / f"{assignment}.ipynb"
    if not released_path.exists() or not (root / "gradebook.db").exists():
        _notebooks.generate_assignment(root, assignment)
    else:  # make sure the gradebook knows this assignment's cells
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            try:
                gradebook.find_assignment(assignment)
            except MissingEntry:
                _notebooks.generate_assignment(root, assignment)
    return released_path


def _stage(root: Path, assignment: str, submissions: dict[str, Path], released, results: dict[str, Result]) -> dict:
    """Inspect every submission and copy the readable ones into submitted/; returns student -> notebook."""
    staged = {}
    for student, path in submissions.items():
        result = results[student]
        nb, findings = inspect_submission(path, released)
        _clear_previous(root, assignment, student)
        if nb is None:
            result.status, result.notes = "unreadable", findings
            continue
        target = root / "submitted" / student / assignment
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target / f"{assignment}.ipynb")
        result.notes = findings
        staged[student] = nb
    return staged


def _grade_all(root: Path, assignment: str, students: list[str], results: dict[str, Result], *, workers: int,
               limits: Limits, sandboxed: bool, progress: bool) -> None:
    from tqdm.auto import tqdm

    threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if workers > 1 else None
    log_dir = root / "grading-logs" / assignment
    log_dir.mkdir(parents=True, exist_ok=True)

    def grade_one(student: str) -> None:
        result = results[student]
        start = time.monotonic()
        result.status, note = run_autograde(root, assignment, student, limits, log_dir, threads, sandboxed)
        result.seconds = round(time.monotonic() - start, 1)
        if note:
            result.notes.append(note)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(grade_one, student) for student in students]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"grading {assignment}", disable=not progress):
            future.result()


def _feedback(root: Path, assignment: str, graded: list[str]) -> None:
    from gradelib import _notebooks

    for student in graded:
        _notebooks.run_nbgrader(["generate_feedback", assignment, f"--student={student}", "--force"], cwd=root,
                                capture_output=True)


def _seal_findings(root: Path, assignment: str, student: str) -> list[str] | None:
    """What the hidden-test seal found while grading (gradelib.grading.hidden.SealFeedback), or None when
    the autograded notebook was not sealed (nbgrader did not finish it): then no feedback is made from it."""
    path = root / "autograded" / student / assignment / f"{assignment}.ipynb"
    try:
        seal = nbformat.read(path, as_version=4).metadata.get("gradelib", {})
    except (OSError, ValueError):
        return None
    return list(seal.get("findings", [])) if seal.get("hidden_tests_sealed") else None


def _collect(root: Path, assignment: str, results: dict[str, Result], graded: dict[str, list[str]]) -> None:
    for result in results.values():
        _read_scores(root, assignment, result)
        if result.status in ("unreadable", "timeout", "kernel-died") and result.student not in graded:
            result.score, result.cells = 0.0, {}
        result.notes += graded.get(result.student, [])
        if result.status == "ok" and result.notes:
            result.status = "tampered"


def _similarity(assignment: str, staged: dict, released, results: dict[str, Result], html: Path | None) -> None:
    """The highest code similarity of each student into their Result, and the page of flagged pairs to ``html``."""
    from gradelib.grading import similarity

    report = similarity.similarity_report(staged, released)
    for student, (value, what) in similarity.max_similarity(report).items():
        if student in results:
            results[student].similarity, results[student].similar_to = value, what
    if html is not None:
        similarity.write_html(report, html, title=f"Similarity report: {assignment}")


def grade_batch(root: Path, assignment: str, submissions: dict[str, Path], *, workers: int = 1,
                limits: Limits | None = None, progress: bool = True, sandboxed: bool = True,
                similarity_html: Path | None = None) -> list[Result]:
    """Autograde ``submissions`` (student -> notebook) in the course at ``root``; one Result per student.

    Refuses (SandboxUnavailable) when ``sandboxed`` and no working bwrap exists. ``similarity_html``:
    where to write the page of flagged code similarities (to the reference and between students)."""
    if sandboxed and sandbox.find_bwrap() is None:
        raise SandboxUnavailable(sandbox.INSTALL_HINT)
    limits = limits or Limits()
    released = nbformat.read(_ensure_released(root, assignment), as_version=4)
    jail = ("bwrap+cgroups" if sandbox.cgroups_available() else "bwrap") if sandboxed else "none"
    results = {student: Result(student, sandbox=jail) for student in submissions}

    staged = _stage(root, assignment, submissions, released, results)
    _grade_all(root, assignment, sorted(staged), results, workers=workers, limits=limits, sandboxed=sandboxed,
               progress=progress)
    sealed = {student: _seal_findings(root, assignment, student) for student in staged}
    graded = {student: findings for student, findings in sealed.items() if findings is not None}
    _feedback(root, assignment, list(graded))
    _collect(root, assignment, results, graded)
    _similarity(assignment, staged, released, results, similarity_html)
    return [results[s] for s in sorted(results)]
