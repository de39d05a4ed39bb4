"""The ``gradelib`` command: thin instructor tools over nbgrader.

    gradelib release 01_attention     regenerate course/01_attention/ from solutions/ (nbgrader generate_assignment)
    gradelib release --all            every assignment
    gradelib store-outputs NOTEBOOK   run a solution notebook (quick profile) and keep only the outputs
                                      of cells marked "# NBVAL_CHECK_OUTPUT", which nbval compares
    gradelib bench [NOTEBOOK ...]     same as `python -m gradelib.bench`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from gradelib import _notebooks


def _release(args: argparse.Namespace) -> int:
    root = _notebooks.project_root()
    names = _notebooks.assignments(root) if args.all else args.assignments
    if not names:
        print("name an assignment (e.g. 01_attention) or pass --all", file=sys.stderr)
        return 2
    for name in names:
        _notebooks.generate_assignment(root, name)
        print(f"released course/{name}/")
    return 0


def keep_checked_outputs(nb) -> None:
    """Keep only the outputs of cells that nbval compares, numbered 1, 2, 3 … so that rerunning
    changes nothing (nbval treats a cell with outputs but no execution count as unrun)."""
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

    bench = commands.add_parser("bench", help="time solution notebooks and collect their metrics", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(run=lambda a: __import__("gradelib.bench", fromlist=["main"]).main(a.rest))

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
