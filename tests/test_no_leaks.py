"""Students get course/ and the gradelib wheel: neither may contain solutions or hidden tests.

gradelib.reference does ship reference implementations: later notebooks build on them. So a one-line
exercise may share its line with the reference; what must never ship is a hidden test, or a whole
solution region as written in the instructor notebook.
"""

import re
import subprocess
import sys
import zipfile

import nbformat
import pytest
from conftest import ROOT, assignment_names


WHOLE_SOLUTION = 200  # characters: longer than any line a reference may share with an exercise
# Modules that must name nbgrader's region markers to do their job (cutting hidden parts out of feedback);
# they are still checked for the content of every hidden test and solution below.
MARKER_MACHINERY = {"gradelib/grading/hidden.py"}


def regions(kind: str, min_length: int) -> list[str]:
    """The text of every BEGIN/END ``kind`` region of the instructor notebooks, whitespace-normalised."""
    found = []
    for name in assignment_names():
        nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            for body in re.findall(rf"### BEGIN {kind}\n(.*?)### END", cell.source, flags=re.S):
                normalised = " ".join(body.split())
                if len(normalised) >= min_length:
                    found.append(normalised)
    return found


def forbidden_regions() -> list[str]:
    return regions("HIDDEN TESTS", 1) + regions("SOLUTION", WHOLE_SOLUTION)


@pytest.fixture(scope="module")
def wheel_texts(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = out.glob("gradelib-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name).decode("utf-8", errors="replace") for name in archive.namelist()
                if not name.endswith(".xz")}


def test_wheel_ships_the_package_and_its_data_but_no_notebooks(wheel_texts):
    names = set(wheel_texts)
    assert "gradelib/checks/attention.py" in names and "gradelib/_data/LICENSE-PSF.txt" in names
    assert not [n for n in names if n.endswith(".ipynb") or n.startswith(("solutions/", "course/", "tests/"))]


def test_wheel_contains_no_solution_region_or_hidden_test(wheel_texts):
    forbidden = forbidden_regions()
    assert forbidden
    for name, text in wheel_texts.items():
        normalised = " ".join(text.split())
        if name not in MARKER_MACHINERY:
            assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text, name
        for region in forbidden:
            assert region not in normalised, f"{name} contains a hidden test or a whole solution: {region[:80]}"


@pytest.mark.parametrize("name", assignment_names())
def test_student_notebook_contains_no_solution_or_hidden_test(name):
    nb = nbformat.read(ROOT / "course" / name / f"{name}.ipynb", as_version=4)
    text = " ".join(" ".join(cell.source.split()) for cell in nb.cells)
    for region in regions("HIDDEN TESTS", 1) + regions("SOLUTION", 30):
        assert region not in text, region[:80]
