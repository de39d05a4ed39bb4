"""The ``gradelib`` command: thin instructor tools over nbgrader.

    gradelib release 01_attention     regenerate course/01_attention/ from solutions/ (nbgrader generate_assignment),
                                      after syncing its Colab badge and set-up cell with pyproject's Repository URL
    gradelib release --all            every assignment
    gradelib store-outputs NOTEBOOK   run a solution notebook (quick profile) and keep only the outputs
                                      of cells marked "# NBVAL_CHECK_OUTPUT", which nbval compares
    gradelib grade 01_attention --submissions DIR [--workers N] [--shard i/N] [--no-sandbox]
                                      autograde every student, each in its own process and bubblewrap
                                      sandbox, under time and memory limits; writes the gradebook, feedback,
                                      a CSV with a status, and a similarity report (HTML) for a human to read
    gradelib check NOTEBOOK           a student's self-check: run the notebook (quick profile) and print the
                                      score each exercise's visible tests give, and the total (in the
                                      sandbox when bwrap is available: safe on a notebook someone sent you)
    gradelib info 06_ddpm             an assignment's graded items and points by kind (code, derive, predict,
                                      concept), and which items exercise each learning objective
    gradelib bench [NOTEBOOK ...]     same as `python -m gradelib.bench`
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat

from gradelib import _notebooks
from gradelib._runtime import PROFILES
from gradelib.grading.autograde import Limits

SELF_CHECK_CELL_TIMEOUT = 600  # seconds per cell for `gradelib check`


def _chosen_assignments(args: argparse.Namespace, root: Path) -> list[str]:
    """The assignments a command names, or every one with --all; none (after saying so) when it names none."""
    names = _notebooks.assignments(root) if args.all else args.assignments
    if not names:
        print("name an assignment (e.g. 01_attention) or pass --all", file=sys.stderr)
    return names


def _release(args: argparse.Namespace) -> int:
    root = _notebooks.project_root()
    names = _chosen_assignments(args, root)
    if not names:
        return 2
    from gradelib import _colab

    for name in names:
        if _colab.sync_solution(root, name):
            print(f"updated the Colab badge and set-up cell of solutions/{name}/ from pyproject.toml")
        _notebooks.generate_assignment(root, name)
        print(f"released course/{name}/")
    return 0


def keep_checked_outputs(nb) -> None:
    """Keep only the outputs of cells that nbval compares, numbered 1, 2, 3 … so that rerunning
    changes nothing (nbval treats a cell with outputs but no execution count as unrun)."""
    nb.metadata.pop("widgets", None)  # saved widget state embeds rendered figures: large and volatile
    checked = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if _notebooks.CHECK_OUTPUT_MARK in cell.source:
            checked += 1
            cell.execution_count = checked
        else:
            cell.outputs = []
            cell.execution_count = None
        for output in cell.outputs:
            if "execution_count" in output:
                output["execution_count"] = cell.execution_count


def _store_outputs(args: argparse.Namespace) -> int:
    root = _notebooks.project_root()
    for name in args.notebooks:
        path = _notebooks.solution_notebook(root, name)
        nb, seconds = _notebooks.execute_notebook(path, profile="quick")
        keep_checked_outputs(nb)
        nbformat.write(nb, path)
        print(f"stored checked outputs of {path.relative_to(root)} ({seconds:.0f} s)")
    return 0


def _warn_unsandboxed(what: str) -> None:
    print(f"WARNING: {what} without a sandbox: the notebook's code runs with your rights and can read and "
          "change your files.", file=sys.stderr)


def _grade(args: argparse.Namespace) -> int:
    from gradelib import grading

    root = _notebooks.project_root()
    submissions = grading.find_submissions(args.submissions.resolve(), args.assignment)
    if not submissions:
        print(f"no submissions of {args.assignment} under {args.submissions}", file=sys.stderr)
        return 2
    if args.no_sandbox:
        _warn_unsandboxed("grading")
    chosen = grading.shard(sorted(submissions), args.shard)
    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.timeout, memory_gb=args.memory_gb)
    suffix = f"-shard-{args.shard.replace('/', '-of-')}" if args.shard else ""
    csv_path = args.csv or root / f"grades-{args.assignment}{suffix}.csv"
    html_path = csv_path.with_name(f"similarity-{args.assignment}{suffix}.html")
    start = time.monotonic()
    try:
        results = grading.grade_batch(root, args.assignment, {s: submissions[s] for s in chosen}, workers=args.workers,
                                      limits=limits, sandboxed=not args.no_sandbox, similarity_html=html_path)
    except grading.SandboxUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    grading.write_csv(results, csv_path)
    print(grading.summary_table(results))
    print(f"\n{len(results)} submissions in {time.monotonic() - start:.0f} s with {args.workers} worker(s); "
          f"scores in {csv_path}, feedback in feedback/<student>/{args.assignment}/, "
          f"code similarity (flags for a human, not scores) in {html_path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from nbgrader.utils import determine_grade, is_grade

    from gradelib.grading import GradingKernelManager, sandbox

    path = args.notebook.resolve()
    sandboxed = not args.no_sandbox and sandbox.find_bwrap() is not None
    if not sandboxed:
        _warn_unsandboxed("checking")
    with _notebooks.environment(GRADELIB_SANDBOX="bwrap" if sandboxed else "off"):
        nb, seconds = _notebooks.execute_notebook(path, profile="quick", allow_errors=True, timeout=args.cell_timeout,
                                                  kernel_manager_class=GradingKernelManager)
    rows, total, maximum = [], 0.0, 0.0
    for cell in nb.cells:
        if cell.cell_type != "code" or not is_grade(cell):
            continue
        score, points = determine_grade(cell)
        score = 0.0 if score is None else float(score)
        rows.append((cell.metadata.nbgrader.grade_id, score, points))
        total, maximum = total + score, maximum + points
    width = max((len(r[0]) for r in rows), default=10)
    for grade_id, score, points in rows:
        mark = "✓" if score == points else "✗"
        print(f"{mark} {grade_id:<{width}}  {score:g} / {points:g}")
    print(f"\ntotal from the visible tests: {total:g} / {maximum:g}   ({seconds:.0f} s, quick profile"
          f"{', sandboxed' if sandboxed else ''})")
    print("The autograder also runs hidden tests, and marks concept questions for correctness.")
    return 0


def _info(args: argparse.Namespace) -> int:
    from gradelib import _items

    root = _notebooks.project_root()
    names = _chosen_assignments(args, root)
    if not names:
        return 2
    for index, name in enumerate(names):
        path = _notebooks.solution_notebook(root, name)
        print(("\n" if index else "") + _items.summary(path.stem, nbformat.read(path, as_version=4)))
    return 0


def _site(args: argparse.Namespace) -> int:
    from gradelib.site import build_site

    build_site(args.out, profile=args.profile, names=args.assignments or None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradelib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    release = commands.add_parser("release", help="regenerate student notebooks in course/")
    release.add_argument("assignments", nargs="*")
    release.add_argument("--all", action="store_true")
    release.set_defaults(run=_release)

    store = commands.add_parser("store-outputs", help="refresh the outputs nbval compares in solution notebooks")
    store.add_argument("notebooks", nargs="+")
    store.set_defaults(run=_store_outputs)

    limits = Limits()  # the defaults of `grade`
    grade = commands.add_parser("grade", help="autograde a batch of submissions robustly (thin over nbgrader)")
    grade.add_argument("assignment")
    grade.add_argument("--submissions", type=Path, required=True,
                       help="folder with STUDENT/ASSIGNMENT/ASSIGNMENT.ipynb (nbgrader's layout) or STUDENT.ipynb files")
    grade.add_argument("--workers", type=int, default=1, help="submissions graded at once, each in its own process")
    grade.add_argument("--shard", default=None, help="grade only shard i/N of the students (1-based), e.g. 2/8")
    grade.add_argument("--cell-timeout", type=int, default=limits.cell_timeout,
                       help="seconds per cell before it is interrupted (default: %(default)s)")
    grade.add_argument("--timeout", type=int, default=limits.notebook_timeout,
                       help="seconds per notebook before its processes are killed (default: %(default)s)")
    grade.add_argument("--memory-gb", type=float, default=limits.memory_gb,
                       help="memory cap of one grading process tree (default: %(default)s)")
    grade.add_argument("--csv", type=Path, default=None, help="where to write the scores (default grades-ASSIGNMENT.csv)")
    grade.add_argument("--no-sandbox", action="store_true",
                       help="grade without the bubblewrap sandbox (student code runs with your rights; the CSV says so)")
    grade.set_defaults(run=_grade)

    check = commands.add_parser("check", help="self-check a notebook: the score its visible tests give")
    check.add_argument("notebook", type=Path)
    check.add_argument("--cell-timeout", type=int, default=SELF_CHECK_CELL_TIMEOUT,
                       help="seconds per cell (longer than grading's: a student's machine may be slow)")
    check.add_argument("--no-sandbox", action="store_true", help="run the notebook without the bubblewrap sandbox")
    check.set_defaults(run=_check)

    info = commands.add_parser("info", help="an assignment's graded items and points by kind, and its objective map")
    info.add_argument("assignments", nargs="*")
    info.add_argument("--all", action="store_true")
    info.set_defaults(run=_info)

    bench = commands.add_parser("bench", help="time solution notebooks and collect their metrics", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(run=lambda a: __import__("gradelib.bench", fromlist=["main"]).main(a.rest))

    site = commands.add_parser("site", help="build the static course web site (Jupyter Book 2, offline) from the notebooks")
    site.add_argument("assignments", nargs="*", help="default: every notebook, in course order")
    site.add_argument("--profile", default="default", choices=PROFILES,
                      help="profile the solutions run in to produce the pages' outputs")
    site.add_argument("--out", type=Path, default=Path("_site"))
    site.set_defaults(run=_site)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
