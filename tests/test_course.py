"""The course as files: student versions in sync with the sources, and sources that grade correctly."""

import ast
import json
import re

import nbformat
import pytest
from conftest import ROOT, assignment_names

NAMES = assignment_names()


def load(path):
    return nbformat.read(path, as_version=4)


def grade_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]


def test_there_is_at_least_one_assignment():
    assert "01_attention" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_student_version_matches_a_fresh_generate_assignment(name, released_course):
    """course/ is exactly what nbgrader generates from solutions/: run `gradelib release NAME` after editing."""
    committed = ROOT / "course" / name / f"{name}.ipynb"
    fresh = released_course / "course" / name / f"{name}.ipynb"
    assert committed.exists(), f"course/{name} is missing: run `gradelib release {name}`"
    assert json.loads(committed.read_text()) == json.loads(fresh.read_text()), (
        f"course/{name} has drifted from solutions/{name}: run `gradelib release {name}` and commit the result")


@pytest.mark.parametrize("name", NAMES)
def test_student_version_has_no_solutions_or_hidden_tests(name):
    text = (ROOT / "course" / name / f"{name}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "expected="):
        assert marker not in text


@pytest.mark.parametrize("name", NAMES)
def test_solution_notebook_keeps_only_checked_outputs(name):
    """Stored outputs are only the small, deterministic ones nbval compares (refresh with `gradelib store-outputs`)."""
    nb = load(ROOT / "solutions" / name / f"{name}.ipynb")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "# NBVAL_CHECK_OUTPUT" in cell.source:
            assert cell.outputs, f"a checked cell has no stored output: run `gradelib store-outputs {name}`"
            assert all(o.output_type == "stream" and o.name == "stdout" for o in cell.outputs)
            assert cell.execution_count is not None, "nbval skips checked cells without an execution count"
        else:
            assert not cell.outputs, "only cells marked # NBVAL_CHECK_OUTPUT keep outputs"
            assert cell.execution_count is None
    assert "widgets" not in nb.metadata, "saved widget state: run `gradelib store-outputs` again"
    assert (ROOT / "solutions" / name / f"{name}.ipynb").stat().st_size < 200_000


@pytest.mark.parametrize("name", NAMES)
def test_points_passed_to_checks_match_the_cell_points(name):
    """A check publishes partial credit in points: the figure must match the cell, or nbgrader errors out."""
    nb = load(ROOT / "solutions" / name / f"{name}.ipynb")
    cells = grade_cells(nb)
    assert cells
    for cell in cells:
        points = cell.metadata.nbgrader.points
        passed = [float(p) for p in re.findall(r"points=([\d.]+)", cell.source)]
        assert passed, f"grade cell {cell.metadata.nbgrader.grade_id} calls no scoring check"
        assert all(p == points for p in passed), cell.metadata.nbgrader.grade_id
        assert cell.source.rstrip().splitlines()[-1].startswith("### END HIDDEN TESTS"), (
            "the hidden check must be the cell's last expression, so its score is what nbgrader reads")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_follows_the_course_shape(name):
    nb = load(ROOT / "solutions" / name / f"{name}.ipynb")
    text = "\n".join(c.source for c in nb.cells)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("## ")]
    for section in ("Learning objectives", "Theory", "worked examples", "Graded exercises", "Concept questions", "Going further"):
        assert any(section.lower() in h.lower() for h in headings), section
    assert ("tqdm" in text or "progress=True" in text) and "report_metric" in text and "gradelib.budget(" in text
    assert "cuda" not in text.replace("gradelib.device()", ""), "pick the device with gradelib.device()"


@pytest.mark.parametrize("name", NAMES)
def test_colab_badge_and_set_up_cell_come_from_the_repository_url_in_pyproject(name):
    from gradelib import _colab

    repository = _colab.repository_url(ROOT)
    nb = load(ROOT / "course" / name / f"{name}.ipynb")
    assert nb.cells[0].source.startswith(_colab.badge_markdown(repository, name) + "\n\n# ")
    assert f"/blob/main/course/{name}/{name}.ipynb" in nb.cells[0].source
    assert nb.cells[1].source == _colab.setup_cell_source(repository)
    assert "==" not in nb.cells[1].source, "no hard pins: Colab's own torch must stay"


def test_colab_sync_rewrites_a_changed_url_and_is_idempotent():
    import nbformat

    from gradelib import _colab

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · Title"), nbformat.v4.new_code_cell("x = 1")])
    assert _colab.sync_notebook(nb, "https://github.com/old/repo", "01_x")
    assert not _colab.sync_notebook(nb, "https://github.com/old/repo", "01_x")
    assert _colab.sync_notebook(nb, "https://github.com/new/course", "01_x")
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[0].source.count("Open In Colab") == 1 and "github/new/course/blob/main/course/01_x/01_x.ipynb" in nb.cells[0].source
    assert "git+https://github.com/new/course" in nb.cells[1].source and "old" not in nb.cells[1].source
    with pytest.raises(ValueError, match="GitHub"):
        _colab.colab_url("https://gitlab.com/a/b", "01_x")


def _calls_to(source: str, name: str) -> list[ast.Call]:
    """The calls of ``name(...)`` or ``training.name(...)`` in a code cell (IPython magics dropped)."""
    tree = ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and ((isinstance(node.func, ast.Name) and node.func.id == name)
                 or (isinstance(node.func, ast.Attribute) and node.func.attr == name
                     and isinstance(node.func.value, ast.Name) and node.func.value.id == "training"))]


@pytest.mark.parametrize("name", NAMES)
def test_every_training_loop_shows_a_labelled_progress_bar(name):
    """Training outside the students' exercise cells shows a labelled bar: gradelib.training.fit (or a reference
    trainer built on it) with progress=True and a label, or, for a loop written out because it is the lesson,
    tqdm.auto with a desc= saying what it trains (a student's own exercise loop stays theirs to write)."""
    nb = load(ROOT / "solutions" / name / f"{name}.ipynb")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        trains = ".backward(" in cell.source and re.search(r"optimi[sz]er\w*\.step\(\)", cell.source)
        if trains and re.search(r"^\s*for .+:", cell.source, re.MULTILINE):
            assert "tqdm(" in cell.source and "desc=" in cell.source, f"cell {index} trains without a labelled tqdm bar"
            assert any("from tqdm.auto import tqdm" in c.source for c in nb.cells), "use tqdm.auto (a widget in Jupyter)"
        for call in _calls_to(cell.source, "fit"):
            given = {keyword.arg for keyword in call.keywords}
            assert {"progress", "label"} <= given, f"cell {index}: fit(...) without progress= and label="
