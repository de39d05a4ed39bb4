"""What each notebook grades: items named by kind, derivations and predictions in every notebook, every learning
objective exercised by a graded item, no solution shown before its exercise, no answer left undefined."""

import ast
import builtins
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT, assignment_names

from gradelib import _items

NAMES = assignment_names()
SOLUTION_REGION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
DETAILS = re.compile(r"<details>.*?</details>", re.S)


def solution(name):
    return nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)


def released(name):
    return nbformat.read(ROOT / "course" / name / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_every_graded_item_names_its_kind(name):
    unnamed = [item.grade_id for item in _items.graded_items(solution(name)) if item.kind is None]
    assert not unnamed, f"graded ids must start with one of {_items.KINDS} and '_': {unnamed}"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_has_derivations_and_predictions(name):
    kinds = [item.kind for item in _items.graded_items(solution(name))]
    assert kinds.count("derive") >= 2 and kinds.count("predict") >= 1, kinds


@pytest.mark.parametrize("name", NAMES)
def test_every_learning_objective_maps_to_graded_items(name):
    nb = solution(name)
    graded = {item.grade_id for item in _items.graded_items(nb)}
    mapped = _items.objectives(nb)
    assert len(mapped) >= 4, "the objectives cell lists its objectives as a numbered list"
    for objective, ids in mapped.items():
        assert ids, f"objective without a graded activity: {objective}"
        assert set(ids) <= graded, f"{objective} maps to ids that are not graded items: {set(ids) - graded}"


def _normalized(line: str) -> str:
    return re.sub(r"\s+", "", line)


def solution_lines(source: str) -> list[str]:
    """The substantial lines of a cell's solution regions: code a student has to come up with."""
    lines = []
    for region in SOLUTION_REGION.findall(source):
        for line in region.splitlines():
            code = line.split("#", 1)[0].strip()
            if len(_normalized(code)) >= 24 and not code.startswith(("return ", "def ", "class ", "import ", "from ")):
                lines.append(code)
    return lines


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_line_is_shown_before_its_exercise(name):
    """An exercise is not transcription: no line of its solution appears in an earlier cell of the student version
    (given code, or markdown outside a collapsed <details> hint)."""
    student = released(name)
    shown_before: list[str] = []
    offenders = []
    for source_cell, student_cell in zip(solution(name).cells, student.cells):
        if source_cell.cell_type == "code":
            for line in solution_lines(source_cell.source):
                if any(_normalized(line) in earlier for earlier in shown_before):
                    offenders.append(f"{source_cell.metadata.get('nbgrader', {}).get('grade_id')}: {line}")
        text = DETAILS.sub("", student_cell.source) if student_cell.cell_type == "markdown" else student_cell.source
        shown_before.append(_normalized(text))
    assert not offenders, "solution lines shown earlier in the student notebook:\n" + "\n".join(offenders)


def _loaded_names(source: str) -> set[str]:
    tree = ast.parse(source)
    imported = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    loaded = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return loaded - imported - set(dir(builtins))


def _assigned_names(source: str) -> set[str]:
    tree = ast.parse(source)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    names |= {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    names |= {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    return names


@pytest.mark.parametrize("name", NAMES)
def test_an_untouched_answer_is_none_not_a_name_error(name):
    """In the student version, every name a concept, prediction or derivation check reads is defined by an
    earlier cell even before the student answers (``answer = None``), so the check says "no answer yet"."""
    defined: set[str] = set()
    undefined = []
    for cell in released(name).cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id", "").split("_")[0] in ("concept", "predict", "derive"):
            missing = _loaded_names(cell.source) - defined
            undefined += [f"{meta['grade_id']}: {n}" for n in sorted(missing)]
        try:
            defined |= _assigned_names(cell.source)
        except SyntaxError:  # a cell with IPython magics
            pass
    assert not undefined, f"names a check reads that the untouched notebook leaves undefined: {undefined}"


def test_info_lists_items_and_points_by_kind():
    result = subprocess.run([sys.executable, "-m", "gradelib.cli", "info", "06_ddpm"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    items = _items.graded_items(solution("06_ddpm"))
    assert result.stdout.startswith(f"06_ddpm: {len(items)} graded items, {sum(i.points for i in items):g} points")
    for kind in ("code", "derive", "predict", "concept"):
        chosen = [i for i in items if i.kind == kind]
        assert re.search(rf"^{kind}\s+{len(chosen)}\s+{sum(i.points for i in chosen):g}$", result.stdout, re.M), kind
    assert "learning objectives → graded items" in result.stdout


def test_objectives_are_parsed_with_continuation_lines_and_arrows():
    cell = nbformat.v4.new_markdown_cell(
        "## 1. Learning objectives\n\nBy the end you can:\n\n1. write attention from memory, including\n"
        "   **why** the $\\sqrt{d_k}$ → `code_sdpa`, `derive_scaling`\n2. build `torch` masks\n\nMore text.")
    mapped = _items.objectives(nbformat.v4.new_notebook(cells=[cell]))
    assert mapped == {"1. write attention from memory, including **why** the $\\sqrt{d_k}$": ["code_sdpa", "derive_scaling"],
                      "2. build `torch` masks": []}


def _question_notebook(printed: str, markdown: str = "**Q2.** How large is the std of q·k for d_k = 64?"):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    shown = new_code_cell("print(table)", outputs=[new_output("stream", name="stdout", text=printed)])
    grade = new_code_cell('check_answer_form("Q2", answer_std, kind="number")\n### BEGIN HIDDEN TESTS\n'
                          'check_answer("Q2", answer_std, expected=8.0, kind="number", rel_tol=1e-3, points=1)\n'
                          "### END HIDDEN TESTS\n", metadata={"nbgrader": {"grade": True, "grade_id": "concept_std", "points": 1}})
    later = new_code_cell("print(std)", outputs=[new_output("stream", name="stdout", text="std 8.000\n")])
    return new_notebook(cells=[shown, new_markdown_cell(markdown), new_code_cell("answer_std = 8.0"), grade, later])


@pytest.mark.parametrize(("printed", "markdown", "copyable"), [
    ("  64      8.00    8.00\n", "**Q2.** …", True),        # the table printed the answer before the question
    ("std(q·k) = 7.996\n", "**Q2.** …", True),              # a rounding the check accepts
    ("std(q·k) = 7.9\n", "**Q2.** …", False),               # a rounding it rejects
    ("after 18.000 steps\n", "**Q2.** …", False),           # digits of a longer number are not the answer
    ("nothing\n", "Hint: it is 8.00.", True),               # markdown counts too
    ("nothing\n", "**Q2.** …", False),                      # printed only after the question: fine
])
def test_an_answer_printed_before_its_question_is_found(printed, markdown, copyable):
    from roundtrip import answers_shown_before_their_question

    nb = _question_notebook(printed, markdown)
    found = answers_shown_before_their_question(nb, nb)
    assert bool(found) is copyable, found


@pytest.mark.parametrize(("text", "expected", "kind", "copy"), [
    ("cache: 536,870,912 bytes", 536_870_912, "integer", "536,870,912"),
    ("cache: 536870912 bytes", 536_870_912, "integer", "536870912"),
    ("cache: 5368709120 bytes", 536_870_912, "integer", None),
    ("a 16x larger matrix", 16, "integer", None),                   # small whole numbers are everywhere
    ("log 4 = 1.386, so -1.386294", -1.386294, "number", "-1.386294"),
    ("value 1.386", -1.386294, "number", None),                      # the sign matters
    ("1.074e+09 bytes", 1.073709056e9, "number", "1.074e+09"),
    ("1.07e+09 bytes", 1.073709056e9, "number", None),             # a rounding the check rejects
    ("mask rows {0, 1, 2}", {2, 1, 0}, "indices", "{0, 1, 2}"),
    ("for i = 0, 1, 2:", {0, 1, 2}, "indices", None),
    ("answer B", "B", "choice", None),
])
def test_copies_are_spellings_the_check_would_accept(text, expected, kind, copy):
    from roundtrip import _copies

    assert _copies(text, expected, kind, 1e-3) == copy


@pytest.mark.parametrize("name", NAMES)
def test_every_answer_key_accepts_its_answer_and_names_each_known_mistake(name):
    """Each concept and prediction key of the hidden tests accepts the expected answer; each of its named
    mistakes is reachable (not within the tolerance of the key or of another mistake) and gets its own
    diagnosis, which never states the expected answer."""
    from gradelib.checks.answers import answer_problem
    from gradelib.grading import hidden

    keys = [key for cell in solution(name).cells if cell.metadata.get("nbgrader", {}).get("grade")
            for part in hidden.hidden_parts(cell.source) for key in hidden.answer_keys(part)]
    assert keys
    for key in keys:
        options = dict(kind=key.kind, options=key.options, rel_tol=key.rel_tol, mistakes=key.mistakes)
        assert answer_problem(key.expected, expected=key.expected, **options) is None, key.label
        for wrong, diagnosis in (key.mistakes or {}).items():
            wrong = set(wrong) if key.kind == "indices" else wrong
            assert answer_problem(wrong, expected=key.expected, **options) == diagnosis, (key.label, wrong)
            if key.kind in ("number", "integer"):
                assert not re.search(rf"(?<![\d.]){re.escape(str(key.expected))}(?![\d])", diagnosis), (key.label, diagnosis)
