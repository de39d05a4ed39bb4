"""Time solution notebooks in fresh kernels and collect the figures they report.

    python -m gradelib.bench                       every notebook, default profile
    python -m gradelib.bench 01_attention --out reports/bench-cpu.json
    python -m gradelib.bench --calibrate           only the machine check: one line, a few seconds
    python -m gradelib.bench 01_attention --sections   the table with each notebook's seconds per section
    python -m gradelib.bench --profile-sections 01_attention 02_bert
                                                   torch.profiler + cProfile per section (slower; never in the plain
                                                   run) -> reports/profile-sections.{md,json}
    python -m gradelib.bench --grading             the grading sandbox's cost: `gradelib grade --workers 2` on
                                                   20 copies of the 01 solution, with and without the sandbox,
                                                   in alternating rounds -> reports/bench-grading.json

Every run first times a small fixed calibration workload (a matmul, a conv, a loop of tiny ops) so that
figures from different machines can be compared, and a slow machine is visible as one.
Writes ``{"device", "profile", "calibration", "notebooks": {name: {"seconds", "sections", "metrics": {...}}}}``
(plus the machine it ran on) and prints a table. ``sections`` are the seconds of each level-2 heading's
cells, from the timings nbclient records in every cell anyway. Notebooks report figures with ``gradelib.report_metric``.
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

from gradelib import _notebooks, profiling
from gradelib._runtime import PROFILES, active_profile, device
from gradelib._tables import text_table
from gradelib.metrics import METRICS_FILE_ENV, target_met
from gradelib.timing import median_seconds


def _machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def calibrate(dev: torch.device | None = None) -> dict:
    """A fixed workload, a few seconds: an fp32 1024x1024 matmul (GFLOP/s), a conv2d of the course's size
    (32 images of 32x28x28 -> 32 channels, 3x3; ms) and a loop of 200 tiny elementwise ops (µs per op)."""
    dev = dev or device()
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(1024, 1024, generator=generator).to(dev) for _ in range(2))
    images = torch.randn(32, 32, 28, 28, generator=generator).to(dev)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).to(dev)
    tiny = torch.ones(8, device=dev)

    def small_ops():
        x = tiny
        for _ in range(100):
            x = x * 1.0001 + 0.0001
        return x

    with torch.inference_mode():
        matmul = median_seconds(lambda: a @ b, min_run_time=0.3)
        conv_seconds = median_seconds(lambda: conv(images), min_run_time=0.3)
        op_seconds = median_seconds(small_ops, min_run_time=0.3) / 200
    result = {"matmul_gflops": round(2 * 1024**3 / matmul / 1e9, 1), "conv_ms": round(conv_seconds * 1e3, 2),
              "small_op_us": round(op_seconds * 1e6, 2)}
    result["line"] = (f"machine: matmul {result['matmul_gflops']:.0f} GFLOP/s, conv {result['conv_ms']:.1f} ms, "
                      f"small ops {result['small_op_us']:.1f} µs/op")
    return result


def section_seconds(nb) -> dict[str, float]:
    """Seconds per level-2 section, summed over its code cells' execution timings (nbclient's
    ``metadata.execution``: from ``iopub.execute_input`` to ``shell.execute_reply``)."""
    totals: dict[str, float] = {}
    for cell, name in zip(nb.cells, profiling.section_of_cells(nb)):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type != "code" or "shell.execute_reply" not in timing or "iopub.execute_input" not in timing:
            continue
        start, end = (datetime.fromisoformat(timing[key]) for key in ("iopub.execute_input", "shell.execute_reply"))
        totals[name] = totals.get(name, 0.0) + (end - start).total_seconds()
    return {name: round(seconds, 1) for name, seconds in totals.items()}


def run_notebook(path: Path, profile: str, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        metrics_file = Path(tmp) / "metrics.json"
        try:
            nb, seconds = _notebooks.execute_notebook(path, profile=profile, timeout=timeout,
                                                      extra_env={METRICS_FILE_ENV: str(metrics_file)})
            status, sections = "ok", section_seconds(nb)
        except Exception as error:  # keep benchmarking the other notebooks
            seconds, status = float("nan"), f"error: {type(error).__name__}: {str(error)[-300:]}"
            sections = {}
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return {"seconds": round(seconds, 1), "status": status, "sections": sections, "metrics": metrics}


def format_table(report: dict, sections: bool = False) -> str:
    """One row per notebook (its seconds, and its status unless ok), with sections=True one row per section,
    then one row per metric it reported."""
    rows = []
    for name, result in report["notebooks"].items():
        rows.append((name, f"{result['seconds']:.1f}", "", "", "", result["status"] if result["status"] != "ok" else ""))
        if sections:
            rows += [("", f"{seconds:.1f}", heading[:48], "", "", "") for heading, seconds in result.get("sections", {}).items()]
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


def profile_sections(root: Path, args) -> int:
    """Profile the named notebooks (default: all) section by section; update reports/profile-sections.{json,md}
    (or --out and its .md twin)."""
    out = args.out or root / "reports" / "profile-sections.json"
    report = json.loads(out.read_text()) if out.exists() else {}
    if report.get("device") != device().type or report.get("profile") != args.profile:
        report = {"notebooks": {}}
    calibration = calibrate()
    print(calibration["line"], flush=True)
    report.update({"device": device().type, "profile": args.profile, "machine": _machine(), "calibration": calibration,
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    for name in args.notebooks or _notebooks.assignments(root):
        path = _notebooks.solution_notebook(root, name)
        print(f"profiling {path} ({args.profile} profile) ...", flush=True)
        report["notebooks"][path.stem] = {**profiling.profile_notebook(path, args.profile, args.timeout),
                                          "conditions": args.conditions, "calibration": calibration["line"]}
    report["notebooks"] = dict(sorted(report["notebooks"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(profiling.markdown(report) + "\n")
    print(f"written to {out} and {out.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradelib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="assignment names or solution notebook paths (default: all)")
    parser.add_argument("--profile", default=active_profile(), choices=PROFILES)
    parser.add_argument("--out", type=Path, default=None, help="report path (default: reports/bench-<device>.json)")
    parser.add_argument("--timeout", type=int, default=1200, help="per-cell timeout in seconds")
    parser.add_argument("--sections", action="store_true", help="print each notebook's seconds per section")
    parser.add_argument("--calibrate", action="store_true", help="only time the calibration workload and print its line")
    parser.add_argument("--profile-sections", action="store_true",
                        help="profile each section (torch.profiler, cProfile) -> reports/profile-sections.{md,json}")
    parser.add_argument("--conditions", default="a quiet machine",
                        help="with --profile-sections: what else the machine was doing, stored per notebook")
    parser.add_argument("--grading", action="store_true", help="measure the grading sandbox's overhead instead")
    parser.add_argument("--submissions", type=int, default=20, help="with --grading: copies graded per batch")
    parser.add_argument("--rounds", type=int, default=2, help="with --grading: alternating rounds per mode")
    args = parser.parse_args(argv)

    if args.calibrate:
        print(calibrate()["line"])
        return 0
    root = _notebooks.project_root()
    if args.profile_sections:
        return profile_sections(root, args)
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
    calibration = calibrate()
    print(calibration["line"], flush=True)
    report.update({"device": dev, "profile": args.profile, "machine": _machine(), "calibration": calibration,
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    for name in names:
        path = _notebooks.solution_notebook(root, name)
        print(f"running {path.relative_to(root)} ({args.profile} profile, {dev}) ...", flush=True)
        report["notebooks"][path.stem] = run_notebook(path, args.profile, args.timeout)
    report["notebooks"] = dict(sorted(report["notebooks"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report, sections=args.sections))
    print(f"\n{calibration['line']}\nwritten to {out}")
    failed = [n for n in names if report["notebooks"][Path(n).stem]["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
