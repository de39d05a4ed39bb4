import json
import subprocess
import sys

import pytest
from conftest import ROOT

from gradelib import cli, grading


def gradelib_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradelib.cli", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(("notebook", "total"), [
    ("course/01_attention/01_attention.ipynb", "0 / 29"),
    ("solutions/01_attention/01_attention.ipynb", "29 / 29"),
])
def test_check_prints_each_exercise_and_the_total(notebook, total):
    result = gradelib_cli("check", notebook)
    assert result.returncode == 0, result.stderr
    assert "code_sdpa" in result.stdout and "concept_kv_bytes" in result.stdout
    assert f"total from the visible tests: {total}" in result.stdout


def test_shards_split_the_class_without_overlap():
    students = [f"s{i:02d}" for i in range(10)]
    shards = [grading.shard(students, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == students
    assert shards[0] == ["s00", "s03", "s06", "s09"]
    assert grading.shard(students, None) == students
    with pytest.raises(ValueError):
        grading.shard(students, "4/3")


def test_find_submissions_reads_both_layouts(tmp_path):
    (tmp_path / "ada" / "01_attention").mkdir(parents=True)
    (tmp_path / "ada" / "01_attention" / "01_attention.ipynb").write_text("{}")
    (tmp_path / "grace.ipynb").write_text("{}")
    assert sorted(grading.find_submissions(tmp_path, "01_attention")) == ["ada", "grace"]


HUNG_TREE = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
             "time.sleep(120)")
MEMORY_HOG = "import time\nhoard = []\nwhile True:\n    hoard.append(b'x' * 2**24); time.sleep(0.01)"


@pytest.mark.parametrize(("code", "limits", "status", "note"), [
    (HUNG_TREE, grading.Limits(notebook_timeout=2, memory_gb=4), "timeout", "killed after 2 s"),
    (MEMORY_HOG, grading.Limits(notebook_timeout=60, memory_gb=0.3), "out-of-memory", "killed: memory above 0.3 GB"),
], ids=["hung-tree", "memory-hog"])
def test_supervise_kills_the_process_tree_at_its_limits(tmp_path, code, limits, status, note):
    with open(tmp_path / "log", "w") as log:
        got, message, _ = grading.supervise([sys.executable, "-c", code], tmp_path, None, log, limits)
    assert (got, message) == (status, note)
    assert got is grading.Status(status)


LIMITS = grading.Limits(cell_timeout=5, memory_gb=2)


@pytest.mark.parametrize(("returncode", "log", "status", "note"), [
    (0, "[AutogradeApp | INFO] Writing 1234 bytes", "ok", ""),
    (1, f"DeadKernelError: Kernel died\n[ERROR] {grading.kernel.OUT_OF_MEMORY_MARK}", "out-of-memory",
     "the kernel was killed: memory above 2 GB"),
    (1, "nbclient.exceptions.DeadKernelError: Kernel died", "kernel-died", "the kernel died while running the notebook"),
    (1, "CellTimeoutError: A cell timed out\nThere was an error processing assignment", "timeout",
     "a cell ignored the interrupt after 5 s"),
    (1, "SchemaTooNewError\nThere was an error processing assignment", "error", "nbgrader could not grade it (see s.log)"),
    (0, "[ERROR] There was an error processing assignment: 01_attention", "error", "nbgrader could not grade it (see s.log)"),
], ids=["ok", "out-of-memory", "kernel-died", "timeout", "error", "error-exit-0"])
def test_how_nbgrader_ended_gives_the_status(returncode, log, status, note):
    assert grading.autograde.outcome(returncode, log, LIMITS, "s.log") == (status, note)


def test_statuses_are_their_strings_in_the_csv_and_the_summary(tmp_path):
    results = [grading.Result("ada", grading.Status.OUT_OF_MEMORY, max_score=29.0), grading.Result("bob", max_score=29.0)]
    grading.write_csv(results, tmp_path / "grades.csv")
    assert [row.split(",")[1] for row in (tmp_path / "grades.csv").read_text().splitlines()] == \
        ["status", "out-of-memory", "ok"]
    assert grading.summary_table(results).splitlines()[-1] == "1 ok, 1 out-of-memory"
    assert json.dumps({"status": grading.Status.ERROR}) == '{"status": "error"}'
    assert f"{grading.Status.KERNEL_DIED}" == str(grading.Status.KERNEL_DIED) == "kernel-died"


def test_grade_takes_its_defaults_from_limits(monkeypatch):
    seen = {}

    def grade(args):
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(cli, "_grade", grade)
    cli.main(["grade", "01_attention", "--submissions", "."])
    defaults = grading.Limits()
    assert (seen["cell_timeout"], seen["timeout"], seen["memory_gb"]) == \
        (defaults.cell_timeout, defaults.notebook_timeout, defaults.memory_gb)


def test_the_docs_table_lists_every_status():
    table = (ROOT / "docs" / "grading.md").read_text().split("### Statuses")[1].split("\n\n")[1]
    assert [line.split("`")[1] for line in table.splitlines()[2:]] == [status.value for status in grading.Status]
