"""Stage 2 of a batch: grade every staged submission in its own supervised ``nbgrader autograde`` process.

Several run at a time, each under a wall-clock limit and a memory cap enforced from outside: the whole
process tree is killed, so a kernel that ignores interrupts cannot hang the batch. The kernel itself runs
in the quick profile, in the sandbox (``gradelib.grading.kernel``). How each process ended becomes the
student's ``Status``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import psutil

from gradelib import _notebooks
from gradelib.grading.course import student_notebook
from gradelib.grading.kernel import MEMORY_VARIABLE, OUT_OF_MEMORY_MARK, SANDBOX_VARIABLE
from gradelib.grading.result import Result, Status


@dataclass
class Limits:
    cell_timeout: int = 120        # seconds one cell may run before nbgrader interrupts it
    notebook_timeout: int = 900    # seconds for the whole notebook before the process tree is killed
    memory_gb: float = 4.0         # resident memory of the grading process tree before it is killed


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


def supervise(command: list[str], cwd: Path, env: dict, log, limits: Limits) -> tuple[Status | None, str, int]:
    """Run ``command`` in its own session; kill its whole process tree if it outruns the notebook timeout
    or its resident memory passes the cap. Returns (``TIMEOUT``, ``OUT_OF_MEMORY`` or None, note, return code)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    watched = psutil.Process(process.pid)
    start, status, note = time.monotonic(), None, ""
    while process.poll() is None:
        if time.monotonic() - start > limits.notebook_timeout:
            status, note = Status.TIMEOUT, f"killed after {limits.notebook_timeout} s"
        elif _tree_memory(watched) > limits.memory_gb * 2**30:
            status, note = Status.OUT_OF_MEMORY, f"killed: memory above {limits.memory_gb:g} GB"
        if status:
            _kill_tree(watched)
            break
        time.sleep(0.2)
    return status, note, process.wait()


def outcome(returncode: int, log_text: str, limits: Limits, log_name: str) -> tuple[Status, str]:
    """(status, note) of an nbgrader process that ran to its end, read from its exit code and its log."""
    failed = returncode != 0 or "error processing assignment" in log_text.lower()
    if OUT_OF_MEMORY_MARK in log_text:
        # The sandbox's control group killed the kernel at the memory cap (the kernel manager logs it).
        return Status.OUT_OF_MEMORY, f"the kernel was killed: memory above {limits.memory_gb:g} GB"
    if "DeadKernelError" in log_text or "kernel died" in log_text.lower():
        return Status.KERNEL_DIED, "the kernel died while running the notebook"
    if failed and "CellTimeoutError" in log_text:
        # A cell outran --cell-timeout and ignored the interrupt, so nbgrader gave up on the notebook.
        return Status.TIMEOUT, f"a cell ignored the interrupt after {limits.cell_timeout} s"
    if failed:
        return Status.ERROR, f"nbgrader could not grade it (see {log_name})"
    return Status.OK, ""


def run_autograde(root: Path, assignment: str, student: str, limits: Limits, log_dir: Path,
                  threads: int | None = None, sandboxed: bool = True) -> tuple[Status, str]:
    """Autograde one student under the limits; returns (status, note).

    threads caps the math libraries' threads in the kernel: parallel workers that each use every core
    oversubscribe the machine, and small torch workloads then slow down several times over.
    """
    env = _notebooks.nbgrader_environment()
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
        shutil.rmtree(student_notebook(root, "autograded", student, assignment).parent, ignore_errors=True)
        return status, note
    return outcome(returncode, log_path.read_text(errors="replace"), limits, log_path.name)


def grade_submissions(root: Path, assignment: str, students: list[str], results: dict[str, Result], *,
                      workers: int, limits: Limits, sandboxed: bool, progress: bool) -> None:
    """Autograde ``students`` (already staged), ``workers`` at a time; status, seconds and notes go into ``results``."""
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
