import json
import sys

import nbformat
import pytest
import torch

import gradelib
from gradelib import bench, profiling
from gradelib.metrics import target_met


def test_report_metric_prints_and_records(tmp_path, monkeypatch, capsys):
    path = tmp_path / "metrics.json"
    monkeypatch.setenv("GRADELIB_METRICS_FILE", str(path))
    monkeypatch.setenv("GRADELIB_PROFILE", "default")
    gradelib.report_metric("accuracy", 0.995, target=0.99)
    gradelib.report_metric("error", 3e-4, target=1e-4, higher_is_better=False)
    printed = capsys.readouterr().out
    assert "accuracy = 0.995" in printed and "met" in printed and "NOT met" in printed
    recorded = json.loads(path.read_text())
    assert recorded["accuracy"] == {"value": 0.995, "target": 0.99, "higher_is_better": True}
    assert recorded["error"]["higher_is_better"] is False


def test_a_target_belongs_to_the_profile_it_was_set_for(tmp_path, monkeypatch, capsys):
    """Correct code in the quick profile (a short run) gets no "target NOT met" for a default-profile target:
    the figure is shown with a note and recorded without a target; a per-profile dict gives quick its own."""
    path = tmp_path / "metrics.json"
    monkeypatch.setenv("GRADELIB_METRICS_FILE", str(path))
    monkeypatch.setenv("GRADELIB_PROFILE", "quick")
    gradelib.report_metric("sort_exact_match", 0.9, target=0.99)
    gradelib.report_metric("zero_shot", 0.32, target={"quick": 0.3, "default": 0.6})
    gradelib.report_metric("fid", 80.0, target={"full": 20.0}, higher_is_better=False)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "[metric] sort_exact_match = 0.9   (its target is set for the default and full profiles, not quick)"
    assert printed[1] == "[metric] zero_shot = 0.32   (target >= 0.3: met)"
    assert printed[2].endswith("(its target is set for the full profile, not quick)")
    recorded = json.loads(path.read_text())
    assert recorded["sort_exact_match"]["target"] is None and recorded["zero_shot"]["target"] == 0.3
    monkeypatch.setenv("GRADELIB_PROFILE", "full")
    gradelib.report_metric("sort_exact_match", 0.9, target=0.99)
    assert "NOT met" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown profiles"):
        gradelib.report_metric("x", 1.0, target={"fast": 1.0})


@pytest.mark.parametrize(
    ("entry", "met"),
    [({"value": 1.0, "target": None, "higher_is_better": True}, None),
     ({"value": 0.5, "target": 0.9, "higher_is_better": True}, False),
     ({"value": 0.5, "target": 0.9, "higher_is_better": False}, True),
     ({"value": float("nan"), "target": 0.9, "higher_is_better": False}, False)],
)
def test_target_met(entry, met):
    assert target_met(entry) is met


def test_bench_table_lists_every_metric():
    report = {"notebooks": {"01_attention": {"seconds": 100.0, "status": "ok", "metrics": {
        "sort_exact_match": {"value": 0.995, "target": 0.99, "higher_is_better": True},
        "sdpa_speedup": {"value": 3.2, "target": None, "higher_is_better": True}}}}}
    table = bench.format_table(report)
    assert "01_attention" in table and "sort_exact_match" in table and "≥ 0.99" in table and "yes" in table


def test_bench_and_grade_print_one_kind_of_table():
    """Both go through gradelib._tables.text_table: padded columns and a rule under the header, as wide as the table."""
    from gradelib import grading

    report = {"notebooks": {"01_attention": {"seconds": 80.0, "status": "ok", "metrics": {
        "a_long_metric_name": {"value": 1.0, "target": None, "higher_is_better": True}}}}}
    results = [grading.Result("ada", grading.Status.OUT_OF_MEMORY, max_score=29.0, notes=["killed: memory above 4 GB"])]
    for table in (bench.format_table(report), grading.summary_table(results)):
        header, rule, *rows = table.splitlines()
        assert set(rule) == {"-"} and len(rule) == max(len(line) for line in (header, *rows))
    assert grading.summary_table(results).splitlines()[2].split()[:2] == ["ada", "out-of-memory"]


def test_committed_cpu_report_has_the_required_shape():
    from conftest import ROOT, assignment_names

    report = json.loads((ROOT / "reports" / "bench-cpu.json").read_text())
    assert report["device"] == "cpu" and report["profile"] == "default"
    for name in assignment_names():
        result = report["notebooks"][name]
        assert result["status"] == "ok" and result["seconds"] > 0
        for entry in result["metrics"].values():
            assert set(entry) == {"value", "target", "higher_is_better"}


def test_calibration_is_one_line_of_three_figures(monkeypatch):
    monkeypatch.setattr(bench, "median_seconds", lambda fn, min_run_time=0.0: (fn(), 0.002)[1])
    result = bench.calibrate(torch.device("cpu"))
    assert result["matmul_gflops"] == round(2 * 1024**3 / 0.002 / 1e9, 1)
    assert result["conv_ms"] == 2.0 and result["small_op_us"] == 10.0  # 200 ops per call
    assert result["line"] == "machine: matmul 1074 GFLOP/s, conv 2.0 ms, small ops 10.0 µs/op"


def _timed_notebook():
    """A notebook as nbclient leaves it: code cells with execution timings, level-2 headings in markdown."""
    def code(seconds):
        cell = nbformat.v4.new_code_cell("x = 1")
        cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000000Z",
                                      "shell.execute_reply": f"2026-01-01T00:00:{seconds:09.6f}Z"}
        return cell

    md = nbformat.v4.new_markdown_cell
    return nbformat.v4.new_notebook(cells=[
        md("# Title"), code(1.0), md("Intro\n\n## 1. Theory\ntext"), code(2.0), code(0.5),
        md("### a subsection stays in its section"), code(1.5), md("## 2. Training"), code(10.0),
        nbformat.v4.new_code_cell("")])  # never run: no timings


def test_section_seconds_sum_each_level_two_section():
    assert bench.section_seconds(_timed_notebook()) == {
        profiling.PREAMBLE: 1.0, "1. Theory": 4.0, "2. Training": 10.0}
    report = {"notebooks": {"01_attention": {"seconds": 16.0, "status": "ok", "sections": {"2. Training": 10.0},
                                             "metrics": {}}}}
    assert "2. Training" in bench.format_table(report, sections=True)
    assert "2. Training" not in bench.format_table(report)


def test_profiling_marks_each_section_and_records_per_cell(tmp_path):
    """The instrumented copy starts with the install cell, marks each section once and ends with the dump;
    the kernel-side recorder attributes each cell's seconds, torch ops and Python functions to its section."""
    copy = profiling.instrumented(_timed_notebook(), tmp_path / "out.json")
    sources = [cell.source for cell in copy.cells]
    assert sources[0].endswith("gradelib.profiling.install()") and "dump(" in sources[-1]
    marks = [s.split("section(")[1] for s in sources if "section(" in s]
    assert marks == [repr(profiling.PREAMBLE) + ")", "'1. Theory')", "'2. Training')"]

    from types import SimpleNamespace

    recorder = profiling._Recorder()
    for name in ("1. Theory", "2. Training"):
        recorder.pre(SimpleNamespace(raw_cell=f"{profiling.MARK}\n..."))  # a marker cell is not profiled
        recorder.section = name
        recorder.pre(SimpleNamespace(raw_cell="torch.randn(64, 64) @ torch.randn(64, 64)"))
        sum(i for i in range(200_000))  # tens of ms: the seconds are kept to 0.01 s
        torch.randn(64, 64) @ torch.randn(64, 64)
        recorder.post(None)
    recorder.section = "4. Graded exercises"  # a check's own sys.setprofile hook must keep working
    recorder.pre(SimpleNamespace(raw_cell="check_thing(thing, points=2)"))
    assert sys.getprofile() is None
    recorder.post(None)
    summary = recorder.summary()
    assert summary.pop("4. Graded exercises")["top_python"] == []
    assert list(summary) == ["1. Theory", "2. Training"]
    for figures in summary.values():
        assert figures["seconds"] > 0 and len(figures["top_torch_ops"]) == profiling.TOP
        assert any("mm" in op for op, _ in figures["top_torch_ops"])
        assert figures["top_python"] and all("~" not in f for f, _ in figures["top_python"])
    report = {"profile": "default", "device": "cpu", "date": "today", "notebooks": {
        "01_attention": {"seconds": 9.0, "conditions": "a machine under load", "calibration": "machine: ...", "sections": {name: {**f, "share": 0.5, "torch_ops_fraction": 0.2}
                                                      for name, f in summary.items()}}}}
    text = profiling.markdown(report)
    assert "measured on a machine under load" in text and "| 2. Training |" in text and "## 01_attention" in text
