"""What students really submit, graded through the real pipeline (`gradelib grade` over nbgrader).

Every case is a submission derived from the released notebook 01, graded in one batch with two
workers, and checked for its score and status. Copies of one submission check that grading is
deterministic, and a serial re-grade checks that parallel and serial grading agree.
"""

import copy
import shutil

import nbformat
import pytest
from conftest import ROOT

from gradelib import grading

ASSIGNMENT = "01_attention"
FULL = 19.0
LIMITS = grading.Limits(cell_timeout=40, notebook_timeout=150, memory_gb=3.0)

WRONG_CAUSAL_MASK = '''
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)  # forgets the diagonal
'''


def solution_sources() -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    return {c.metadata.nbgrader.grade_id: c.source for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def submission(released, answers: dict[str, str] | None = None, *, prepend: dict[str, str] | None = None,
               replace_locked: dict[str, str] | None = None, delete: tuple[str, ...] = ()):
    """The released notebook with every exercise answered as in the solution, then edited."""
    nb = copy.deepcopy(released)
    sources = solution_sources() | (answers or {})
    kept = []
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in delete:
            continue
        if grade_id in sources and cell.metadata.nbgrader.get("solution"):
            cell.source = (prepend or {}).get(grade_id, "") + sources[grade_id]
        if grade_id in (replace_locked or {}):
            cell.source = replace_locked[grade_id]
        kept.append(cell)
    nb.cells = kept
    return nb


def build_cases(released) -> dict[str, object]:
    """student -> notebook (or raw text for an unreadable file)."""
    solution = solution_sources()
    cases = {
        "c01_untouched": copy.deepcopy(released),
        "c02_solution": submission(released),
        "c03_one_wrong": submission(released, {"ex1_sdpa": solution["ex1_sdpa"].replace(
            "weights = torch.softmax(scores, dim=-1)", "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)")}),
        "c04_test_edited": submission(released, {"ex2_causal": WRONG_CAUSAL_MASK}, replace_locked={"test_ex2_causal": "pass"}),
        "c05_test_deleted": submission(released, {"ex2_causal": WRONG_CAUSAL_MASK}, delete=("test_ex2_causal",)),
        "c06_infinite_loop": submission(released, {"ex2_causal": "while True:\n    pass"}),
        "c07_ignores_interrupt": submission(released, {"ex5_rope": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"}),
        "c08_os_exit": submission(released, {"ex4_mha": "import os\nos._exit(0)"}),
        "c09_memory_bomb": submission(released, {"ex3_pe": "hoard = []\nwhile True:\n    hoard.append(b'x' * (64 * 2**20))"}),
        "c10_truncated": None,  # written as broken JSON below
        "c11_silenced_tracebacks": submission(released, {"ex2_causal": WRONG_CAUSAL_MASK},
                                              prepend={"ex1_sdpa": "get_ipython().showtraceback = lambda *a, **k: None\n"}),
        "c12_patched_allclose": submission(released, {"ex2_causal": WRONG_CAUSAL_MASK}, prepend={"ex1_sdpa": (
            "import numpy\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
            "numpy.allclose = lambda *a, **k: True\n")}),
        "c13_rebound_check": submission(released, {"ex2_causal": WRONG_CAUSAL_MASK + (
            "import gradelib.checks.attention\n"
            "try:\n    gradelib.checks.attention.check_causal_mask = lambda *a, **k: 1.0\nexcept AttributeError:\n    pass\n")}),
        "c14_fake_tensors": submission(released, {
            "ex2_causal": "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n    shape = (1, 1)\n\n"
                          "def causal_mask(T, device=None):\n    return AlwaysEqual()\n",
            "ex3_pe": "def sinusoidal_positional_encoding(num_positions, d_model):\n    return torch.full((num_positions, d_model), float('nan'))\n"}),
        "c15_calls_reference": submission(released, {"ex2_causal": "def causal_mask(T, device=None):\n    return reference.causal_mask(T, device)\n"}),
        "c16_grader_aware": submission(released, {"ex2_causal": WRONG_CAUSAL_MASK + (
            "import os\nif os.environ.get('NBGRADER_EXECUTION'):\n"
            "    def causal_mask(T, device=None):\n        return torch.ones(T, T, dtype=torch.bool, device=device).tril()\n")}),
        "c17_wrong_kernel": submission(released),
    }
    cases["c17_wrong_kernel"].metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "Nope", "language": "python"}
    for copy_index in (2, 3):  # the same submission graded three times in one batch
        cases[f"c03_one_wrong_copy{copy_index}"] = copy.deepcopy(cases["c03_one_wrong"])
    return cases


EXPECTED = {  # student -> (status, total score)
    "c01_untouched": ("ok", 0.0),
    "c02_solution": ("ok", FULL),
    "c03_one_wrong": ("ok", FULL - 0.6),
    "c03_one_wrong_copy2": ("ok", FULL - 0.6),
    "c03_one_wrong_copy3": ("ok", FULL - 0.6),
    "c04_test_edited": ("tampered", FULL - 1),
    "c05_test_deleted": ("tampered", FULL - 1),
    "c06_infinite_loop": ("ok", FULL - 1),
    "c07_ignores_interrupt": ("timeout", 0.0),
    "c08_os_exit": ("kernel-died", 0.0),
    "c09_memory_bomb": ("kernel-died", 0.0),
    "c10_truncated": ("unreadable", 0.0),
    "c11_silenced_tracebacks": ("ok", FULL - 1),
    "c12_patched_allclose": ("ok", FULL - 1),
    "c13_rebound_check": ("ok", FULL - 1),
    "c14_fake_tensors": ("ok", FULL - 1 - 2),
    "c15_calls_reference": ("ok", FULL - 1),
    "c16_grader_aware": ("ok", FULL - 1),
    "c17_wrong_kernel": ("ok", FULL),
}


@pytest.fixture(scope="module")
def course(released_course, tmp_path_factory):
    """A private copy of the released course, so these gradings do not mix with other tests'."""
    root = tmp_path_factory.mktemp("adversarial")
    for name in ("nbgrader_config.py", "gradebook.db"):
        shutil.copy(released_course / name, root / name)
    for folder in ("solutions", "course"):
        shutil.copytree(released_course / folder, root / folder)
    return root


@pytest.fixture(scope="module")
def batch(course, tmp_path_factory):
    released = nbformat.read(course / "course" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    folder = tmp_path_factory.mktemp("submissions")
    for student, nb in build_cases(released).items():
        target = folder / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        target.parent.mkdir(parents=True)
        if nb is None:
            target.write_text(nbformat.writes(released)[:5000])  # cut off mid-JSON
        else:
            nbformat.write(nb, target)
    submissions = grading.find_submissions(folder, ASSIGNMENT)
    results = grading.grade_batch(course, ASSIGNMENT, submissions, workers=2, limits=LIMITS, progress=False)
    print("\n" + grading.summary_table(results))
    return {r.student: r for r in results}, submissions


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_case_gets_expected_status_and_score(batch, student):
    results, _ = batch
    result = results[student]
    status, score = EXPECTED[student]
    assert (result.status, result.score) == (status, pytest.approx(score)), result.notes


def test_restored_tests_are_flagged(batch):
    results, _ = batch
    assert any("test_ex2_causal was edited" in n for n in results["c04_test_edited"].notes)
    assert any("test_ex2_causal was deleted" in n for n in results["c05_test_deleted"].notes)


def test_feedback_names_the_fault(batch, course):
    feedback = (course / "feedback" / "c03_one_wrong" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "Scaled dot-product attention: 2.4 / 3 points" in feedback and "NaN or inf" in feedback
    feedback = (course / "feedback" / "c15_calls_reference" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "calls gradelib.reference" in feedback


def test_time_is_bounded(batch):
    results, _ = batch
    assert results["c07_ignores_interrupt"].seconds < LIMITS.notebook_timeout + 30
    assert results["c06_infinite_loop"].seconds < LIMITS.notebook_timeout


def test_serial_grading_gives_the_same_scores(batch, course):
    results, submissions = batch
    again = grading.grade_batch(course, ASSIGNMENT, {s: submissions[s] for s in ("c02_solution", "c03_one_wrong")},
                                workers=1, limits=LIMITS, progress=False)
    for result in again:
        assert result.cells == results[result.student].cells
        assert result.score == results[result.student].score


def test_csv_has_a_status_column(batch, tmp_path):
    results, _ = batch
    path = tmp_path / "grades.csv"
    grading.write_csv(list(results.values()), path)
    header, *rows = path.read_text().splitlines()
    assert header.startswith("student,status,score,max_score,seconds,")
    assert len(rows) == len(EXPECTED)
