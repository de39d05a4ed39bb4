"""Where a notebook's seconds go, per section: ``python -m gradelib.bench --profile-sections [names]``.

Each notebook runs in a fresh kernel with two IPython hooks around every cell (``pre_run_cell`` and
``post_run_cell``): ``torch.profiler`` records the torch ops (model code) and ``cProfile`` the Python
functions (overhead). A marker cell at each level-2 heading ("## 3. Training") names the section the
following cells belong to, and a last cell writes the per-section figures to a JSON file. Both
profilers slow the run down, so the seconds here are for shares and comparisons only; the plain
benchmark (``python -m gradelib.bench``) never profiles.

Per section: seconds (wall, profiled), the top torch ops by self CPU time, the top Python functions
by ``tottime`` (built-ins left out: torch's own C calls are already the torch ops), and the share of
the section spent inside torch ops; the rest is Python, plotting and everything else outside torch.
Cells that call a ``check_*`` run without cProfile: a check watches for calls into gradelib.reference
with ``sys.setprofile``, the hook cProfile occupies on Python 3.11 (their seconds and torch ops still count).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import nbformat

MARK = "# gradelib.profiling"
PREAMBLE = "(before the first section)"
TOP = 3
CHECK_CALL = re.compile(r"\bcheck_\w+\(")


def section_of_cells(nb) -> list[str]:
    """The section of each cell: the last level-2 markdown heading at or before it."""
    current, sections = PREAMBLE, []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if re.match(r"^##\s", line):
                    current = line[2:].strip()
        sections.append(current)
    return sections


# --- kernel side: runs inside the notebook's kernel -------------------------------------------------

class _Recorder:
    def __init__(self):
        import torch.profiler

        self._torch_profiler = torch.profiler
        self.section = PREAMBLE
        self.seconds: Counter = Counter()
        self.ops: dict[str, Counter] = {}
        self.python: dict[str, cProfile.Profile] = {}
        self._active = None

    def pre(self, info):
        if info.raw_cell.startswith(MARK):
            return
        activities = [self._torch_profiler.ProfilerActivity.CPU]
        python = self.python.setdefault(self.section, cProfile.Profile())
        python = None if CHECK_CALL.search(info.raw_cell) else python
        self._active = (self._torch_profiler.profile(activities=activities), python, time.perf_counter())
        self._active[0].__enter__()
        if python is not None:
            python.enable()

    def post(self, result):
        if self._active is None:
            return
        prof, python, start = self._active
        if python is not None:
            python.disable()
        prof.__exit__(None, None, None)
        self._active = None
        self.seconds[self.section] += time.perf_counter() - start
        ops = self.ops.setdefault(self.section, Counter())
        for event in prof.key_averages():
            ops[event.key] += event.self_cpu_time_total / 1e6

    def summary(self) -> dict:
        out = {}
        for name, seconds in self.seconds.items():
            ops = self.ops.get(name, Counter())
            profiled = self.python[name].getstats()  # empty where every cell was a check
            stats = pstats.Stats(self.python[name]).stats if profiled else {}
            python = [(f"{Path(file).name}:{line}({func})", tottime)
                      for (file, line, func), (_, _, tottime, _, _) in stats.items() if file != "~"]
            torch_seconds = sum(ops.values())
            out[name] = {"seconds": round(seconds, 2),
                         "torch_ops_seconds": round(torch_seconds, 2),
                         "top_torch_ops": [[op, round(s, 3)] for op, s in ops.most_common(TOP)],
                         "top_python": [[f, round(s, 3)] for f, s in sorted(python, key=lambda p: -p[1])[:TOP]]}
        return out


_recorder: _Recorder | None = None


def install() -> None:
    """Register the hooks in this IPython kernel (the first injected cell calls this)."""
    global _recorder
    from IPython import get_ipython

    _recorder = _Recorder()
    get_ipython().events.register("pre_run_cell", _recorder.pre)
    get_ipython().events.register("post_run_cell", _recorder.post)


def section(name: str) -> None:
    _recorder.section = name


def dump(path: str) -> None:
    Path(path).write_text(json.dumps(_recorder.summary(), indent=1))


# --- driver side ------------------------------------------------------------------------------------

def instrumented(nb, out_json: Path):
    """A copy of ``nb`` with the install cell first, a marker cell at each section and the dump cell last."""
    cells = [nbformat.v4.new_code_cell(f"{MARK}\nimport gradelib.profiling\ngradelib.profiling.install()")]
    previous = None
    for cell, name in zip(nb.cells, section_of_cells(nb)):
        if name != previous:
            cells.append(nbformat.v4.new_code_cell(f"{MARK}\ngradelib.profiling.section({name!r})"))
            previous = name
        cells.append(cell)
    cells.append(nbformat.v4.new_code_cell(f"{MARK}\ngradelib.profiling.dump({str(out_json)!r})"))
    copy = nbformat.from_dict(dict(nb))
    copy.cells = cells
    return copy


def profile_notebook(path: Path, profile: str, timeout: int) -> dict:
    """Run one notebook with the profilers on; {section: figures} in notebook order."""
    from nbclient import NotebookClient

    from gradelib import _notebooks

    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "sections.json"
        nb = instrumented(nbformat.read(path, as_version=4), out_json)
        # Run from the notebook's own folder, as the benchmark does, without writing a copy there.
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                                resources={"metadata": {"path": str(path.parent)}})
        with _notebooks.environment(GRADELIB_PROFILE=profile, MPLBACKEND=None):
            start = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - start
        sections = json.loads(out_json.read_text())
    total = sum(s["seconds"] for s in sections.values()) or 1.0
    for figures in sections.values():
        figures["share"] = round(figures["seconds"] / total, 3)
        figures["torch_ops_fraction"] = round(min(figures["torch_ops_seconds"] / max(figures["seconds"], 1e-9), 1.0), 3)
    return {"seconds": round(seconds, 1), "sections": sections}


def markdown(report: dict) -> str:
    lines = ["# Where the seconds go, per notebook section", "",
             f"`python -m gradelib.bench --profile-sections` ({report['profile']} profile, {report['device']}, "
             f"last run {report['date']}).", "",
             "Seconds are measured with both profilers on (slower than the plain benchmark); read them as shares. "
             "*torch ops* is the share of the section's time spent inside torch ops (torch.profiler, self CPU); "
             "the rest is Python overhead, plotting and everything else outside torch. Python functions are the "
             "top ones by cProfile tottime, built-ins left out.", ""]
    for name, result in report["notebooks"].items():
        lines += [f"## {name}", "", f"{result['seconds']:.0f} s with the profilers on, measured on {result['conditions']}; "
                  f"{result['calibration']}.", "",
                  "| section | s | share | torch ops | top torch ops (s) | top Python functions (s) |",
                  "|---|---:|---:|---:|---|---|"]
        for heading, s in result["sections"].items():
            ops = "<br>".join(f"`{op}` {t:.2f}" for op, t in s["top_torch_ops"])
            python = "<br>".join(f"`{f}` {t:.2f}" for f, t in s["top_python"])
            lines.append(f"| {heading} | {s['seconds']:.1f} | {s['share']:.0%} | {s['torch_ops_fraction']:.0%} | {ops} | {python} |")
        lines.append("")
    return "\n".join(lines)
