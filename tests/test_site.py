"""`make site`: the static course site builds offline, has a page per notebook in course order, renders math,
and shows a picture wherever a notebook has an interactive explorer."""

import re
import time

import pytest
from conftest import ROOT, assignment_names

from gradelib.site import STATIC_NOTE, freeze_widgets, page_notebook

NAMES = assignment_names()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from gradelib.site import build_site

    start = time.perf_counter()
    html = build_site(tmp_path_factory.mktemp("site"), profile="quick", root=ROOT)
    print(f"site built in {time.perf_counter() - start:.0f} s")
    return html


def test_every_notebook_has_a_page_in_course_order(site):
    index = (site / "intro.html").read_text()
    links = re.findall(r'href="(\d\d_[a-z_]+)\.html"', index)
    assert list(dict.fromkeys(links)) == NAMES
    for name in NAMES:
        assert (site / f"{name}.html").exists(), f"no page for {name}"


@pytest.mark.parametrize("name", NAMES)
def test_page_renders_math_and_outputs_without_leaking_solutions(site, name):
    page = (site / f"{name}.html").read_text()
    assert page.count('class="math') >= 5, "equations were not turned into math markup"
    assert "mathjax" in page.lower(), "no MathJax on the page"
    assert "<img" in page, "no plot on the page"
    assert "# YOUR CODE HERE" in page, "the page should show the student version"
    assert "BEGIN HIDDEN TESTS" not in page and "BEGIN SOLUTION" not in page
    assert "Traceback" not in page


@pytest.mark.parametrize("name", NAMES)
def test_hints_stay_collapsed_with_their_math_rendered(site, name):
    """Every <details> hint of the student notebook is a closed <details> element on the page, and the
    equations inside it are math markup, not raw dollars."""
    import nbformat

    student = nbformat.read(ROOT / "course" / name / f"{name}.ipynb", as_version=4)
    hints = sum(cell.source.count("<details>") for cell in student.cells if cell.cell_type == "markdown")
    page = (site / f"{name}.html").read_text()
    shown = re.findall(r"<details>(.*?)</details>", page, re.S)
    assert hints >= 1 and len(shown) == hints
    assert "<details open" not in page
    assert not [hint for hint in shown if "$$" in hint or re.search(r"(?<![\\$])\$[^$\s][^$]*\$", hint)], "raw TeX in a hint"


def test_interactive_explorers_become_pictures(site):
    page = (site / "01_attention.html").read_text()
    after_note = page.split(STATIC_NOTE.strip("*"))[1:]
    assert after_note, "01's attention explorer left no static snapshot"
    assert all("<img" in chunk[:4000] for chunk in after_note)
    assert "application/vnd.jupyter.widget-view+json" not in page


def test_freezing_turns_progress_bars_into_text_and_explorers_into_their_figure():
    import nbformat

    states = {
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_desc", "IPY_MODEL_progress", "IPY_MODEL_count"]}},
        "desc": {"model_name": "HTMLModel", "state": {"value": "training:"}},
        "progress": {"model_name": "FloatProgressModel", "state": {"value": 10}},
        "count": {"model_name": "HTMLModel", "state": {"value": "100% 10/10 [00:01&lt;00:00]"}},
        "explorer": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}},
        "slider": {"model_name": "IntSliderModel", "state": {"value": 3}},
        "image_explorer": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_image"]}},
        "image": {"model_name": "ImageModel", "state": {"format": "png"},
                  "buffers": [{"path": ["value"], "encoding": "base64", "data": "iVBORimage"}]},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}]}},
    }
    view = "application/vnd.jupyter.widget-view+json"
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": states}}})
    nb.cells = [nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", {view: {"model_id": m}})])
                for m in ("bar", "explorer", "image_explorer")]
    assert freeze_widgets(nb) == 2
    assert nb.cells[0].outputs[0].text == "training: 100% 10/10 [00:01<00:00]\n"
    assert [list(o.data) for o in nb.cells[1].outputs] == [["text/markdown"], ["image/png", "text/plain"]]
    assert nb.cells[2].outputs[1].data == {"image/png": "iVBORimage"}
    assert "widgets" not in nb.metadata


def test_pages_refuse_a_student_notebook_that_does_not_match_the_solution():
    import nbformat

    student = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")])
    with pytest.raises(ValueError, match="differ in length"):
        page_notebook(student, executed)
