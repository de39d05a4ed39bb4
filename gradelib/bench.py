"""Time solution notebooks in fresh kernels and collect the figures they report.

    python -m gradelib.bench                       every notebook, default profile
    python -m gradelib.bench 01_attention --out reports/bench-cpu.json

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
from datetime import datetime, timezone
from pathlib import Path

import torch

from gradelib import _notebooks
from gradelib._runtime import PROFILES, device
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
    rows = [("notebook", "seconds", "metric", "value", "target", "met")]
    for name, result in report["notebooks"].items():
        rows.append((name, f"{result['seconds']:.1f}", "", "", "", result["status"] if result["status"] != "ok" else ""))
        for metric, entry in result["metrics"].items():
            met = target_met(entry)
            target = "" if entry["target"] is None else ("≥ " if entry["higher_is_better"] else "≤ ") + f"{entry['target']:.4g}"
            rows.append(("", "", metric, f"{entry['value']:.4g}", target, "" if met is None else ("yes" if met else "NO")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradelib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="assignment names or solution notebook paths (default: all)")
    parser.add_argument("--profile", default=os.environ.get("GRADELIB_PROFILE") or "default", choices=PROFILES)
    parser.add_argument("--out", type=Path, default=None, help="report path (default: reports/bench-<device>.json)")
    parser.add_argument("--timeout", type=int, default=1200, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)

    root = _notebooks.project_root()
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
