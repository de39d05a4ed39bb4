import json

import pytest

import gradelib
from gradelib import bench
from gradelib.metrics import target_met


def test_report_metric_prints_and_records(tmp_path, monkeypatch, capsys):
    path = tmp_path / "metrics.json"
    monkeypatch.setenv("GRADELIB_METRICS_FILE", str(path))
    gradelib.report_metric("accuracy", 0.995, target=0.99)
    gradelib.report_metric("error", 3e-4, target=1e-4, higher_is_better=False)
    printed = capsys.readouterr().out
    assert "accuracy = 0.995" in printed and "met" in printed and "NOT met" in printed
    recorded = json.loads(path.read_text())
    assert recorded["accuracy"] == {"value": 0.995, "target": 0.99, "higher_is_better": True}
    assert recorded["error"]["higher_is_better"] is False


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


def test_committed_cpu_report_has_the_required_shape():
    from conftest import ROOT, assignment_names

    report = json.loads((ROOT / "reports" / "bench-cpu.json").read_text())
    assert report["device"] == "cpu" and report["profile"] == "default"
    for name in assignment_names():
        result = report["notebooks"][name]
        assert result["status"] == "ok" and result["seconds"] > 0
        for entry in result["metrics"].values():
            assert set(entry) == {"value", "target", "higher_is_better"}
