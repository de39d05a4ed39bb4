import subprocess
import sys

import pytest
from conftest import ROOT

from gradelib import grading


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


def test_supervise_kills_a_hung_process_tree(tmp_path):
    limits = grading.Limits(notebook_timeout=2, memory_gb=4)
    with open(tmp_path / "log", "w") as log:
        status, note, _ = grading.supervise(
            [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"],
            tmp_path, None, log, limits)
    assert status == "timeout" and "killed after 2 s" in note


def test_supervise_caps_memory(tmp_path):
    limits = grading.Limits(notebook_timeout=60, memory_gb=0.3)
    with open(tmp_path / "log", "w") as log:
        status, note, _ = grading.supervise(
            [sys.executable, "-c", "import time\nhoard = []\nwhile True:\n    hoard.append(b'x' * 2**24); time.sleep(0.01)"],
            tmp_path, None, log, limits)
    assert status == "kernel-died" and "memory" in note
