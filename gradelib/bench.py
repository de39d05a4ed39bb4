"""Time solution notebooks in fresh kernels and collect the figures they report.

    python -m gradelib.bench                       every notebook, default profile
    python -m gradelib.bench 01_attention --out reports/bench-cpu.json
    python -m gradelib.bench --grading             the grading sandbox's cost: `gradelib grade --workers 2` on
                                                   20 copies of the 01 solution, with and without the sandbox,
                                                   in alternating rounds -> reports/bench-grading.json

Writes ``{"device", "profile", "notebooks": {name: {"seconds", "metrics": {...}}}}`` (plus the
machine it ran on) and prints a table. Notebooks report figures with ``gradelib.report_metric``.
An existing report file is updated, not replaced, so notebooks can be benchmarked one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from gradelib import _notebooks
from gradelib._runtime import PROFILES, active_profile, device
from gradelib._tables import text_table
from gradelib.metrics import METRICS_FILE_ENV, target_met


def _machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_notebook(path: Path, profile: str, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        metrics_file = Path(tmp) / "metrics.json"
        try:
            _, seconds = _notebooks.execute_notebook(path, profile=profile, timeout=timeout,
                                                     extra_env={METRICS_FILE_ENV: str(metrics_file)})
            status = "ok"
        except Exception as error:  # keep benchmarking the other notebooks
            seconds, status = float("nan"), f"error: {type(error).__name__}: {str(error)[-300:]}"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return {"seconds": round(seconds, 1), "status": status, "metrics": metrics}


def format_table(report: dict) -> str:
    """One row per notebook (its seconds, and its status unless ok), then one row per metric it reported."""
    rows = []
    for name, result in report["notebooks"].items():
        rows.append((name, f"{result['seconds']:.1f}", "", "", "", result["status"] if result["status"] != "ok" else ""))
        for metric, entry in result["metrics"].items():
            met = target_met(entry)
            target = "" if entry["target"] is None else ("≥ " if entry["higher_is_better"] else "≤ ") + f"{entry['target']:.4g}"
            rows.append(("", "", metric, f"{entry['value']:.4g}", target, "" if met is None else ("yes" if met else "NO")))
    return text_table(("notebook", "seconds", "metric", "value", "target", "met"), rows)


def bench_grading(assignment: str, count: int, workers: int, rounds: int) -> dict:
    """Grade ``count`` copies of the solution with and without the sandbox, alternating ``rounds`` times
    (so that a noisy machine hurts both alike); per-submission and whole-batch seconds, medians."""
    import shutil
    import statistics

    from gradelib import grading

    root = _notebooks.project_root()
    timings: dict[str, dict[str, list[float]]] = {mode: {"batch": [], "submission": []} for mode in ("sandbox", "none")}
    with tempfile.TemporaryDirectory() as tmp:
        course, submitted = Path(tmp) / "course", Path(tmp) / "submitted"
        (course / "solutions").mkdir(parents=True)
        shutil.copy(root / "nbgrader_config.py", course)
        shutil.copytree(root / "solutions" / assignment, course / "solutions" / assignment)
        _notebooks.generate_assignment(course, assignment)
        solution = course / "solutions" / assignment / f"{assignment}.ipynb"
        for index in range(count):
            (submitted / f"s{index:02d}" / assignment).mkdir(parents=True)
            shutil.copy(solution, submitted / f"s{index:02d}" / assignment / f"{assignment}.ipynb")
        submissions = grading.find_submissions(submitted, assignment)
        for round_index in range(rounds):
            for mode in (("sandbox", "none") if round_index % 2 == 0 else ("none", "sandbox")):
                print(f"round {round_index + 1}/{rounds}: {count} submissions, {mode}", flush=True)
                start = time.perf_counter()
                results = grading.grade_batch(course, assignment, submissions, workers=workers,
                                              sandboxed=mode == "sandbox", progress=False)
                timings[mode]["batch"].append(time.perf_counter() - start)
                timings[mode]["submission"] += [r.seconds for r in results]
                if {r.score for r in results} != {results[0].max_score}:
                    raise RuntimeError(f"the solution did not score full marks {mode}: {[r.score for r in results]}")
    summary = {mode: {"batch_seconds_median": round(statistics.median(t["batch"]), 1),
                      "submission_seconds_median": round(statistics.median(t["submission"]), 2),
                      "batches": [round(x, 1) for x in t["batch"]]} for mode, t in timings.items()}
    return {"assignment": assignment, "submissions": count, "workers": workers, "rounds": rounds,
            "jail": grading.sandbox.jail(sandboxed=True), **summary,
            "sandbox_overhead": {
                "batch": round(summary["sandbox"]["batch_seconds_median"] / summary["none"]["batch_seconds_median"] - 1, 3),
                "submission": round(summary["sandbox"]["submission_seconds_median"]
                                    / summary["none"]["submission_seconds_median"] - 1, 3)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradelib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="assignment names or solution notebook paths (default: all)")
    parser.add_argument("--profile", default=active_profile(), choices=PROFILES)
    parser.add_argument("--out", type=Path, default=None, help="report path (default: reports/bench-<device>.json)")
    parser.add_argument("--timeout", type=int, default=1200, help="per-cell timeout in seconds")
    parser.add_argument("--grading", action="store_true", help="measure the grading sandbox's overhead instead")
    parser.add_argument("--submissions", type=int, default=20, help="with --grading: copies graded per batch")
    parser.add_argument("--rounds", type=int, default=2, help="with --grading: alternating rounds per mode")
    args = parser.parse_args(argv)

    root = _notebooks.project_root()
    if args.grading:
        report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": _machine(),
                  **bench_grading("01_attention", args.submissions, workers=2, rounds=args.rounds)}
        out = args.out or root / "reports" / "bench-grading.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return 0
    names = args.notebooks or _notebooks.assignments(root)
    dev = device().type
    out = args.out or root / "reports" / f"bench-{dev}.json"
    report = json.loads(out.read_text()) if out.exists() else {}
    if report.get("device") != dev or report.get("profile") != args.profile:
        report = {"notebooks": {}}  # figures from another device or profile do not mix
    report.update({"device": dev, "profile": args.profile, "machine": _machine(),
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    for name in names:
        path = _notebooks.solution_notebook(root, name)
        print(f"running {path.relative_to(root)} ({args.profile} profile, {dev}) ...", flush=True)
        report["notebooks"][path.stem] = run_notebook(path, args.profile, args.timeout)
    report["notebooks"] = dict(sorted(report["notebooks"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"\nwritten to {out}")
    failed = [n for n in names if report["notebooks"][Path(n).stem]["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
