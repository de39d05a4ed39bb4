import json

import pytest

import gradelib
from gradelib import bench
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
