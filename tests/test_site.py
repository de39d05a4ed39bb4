"""`make site`: the static course site builds offline with Jupyter Book 2, has a page per notebook in course
order, typesets its equations at build time (KaTeX, stylesheet and fonts bundled), asks nothing of the
network when read, and shows a picture wherever a notebook has an interactive explorer.
tests/test_browser.py opens a page in Chromium from file:// with the network off."""

import re
import time
from pathlib import Path

import pytest
from conftest import ROOT, assignment_names

from gradelib.site import STATIC_NOTE, build_content, freeze_widgets, myst_markdown, page_notebook, write_book, write_pages

NAMES = assignment_names()
# Any reference that a browser would fetch from the web: a script, stylesheet, picture or frame.
REMOTE_RESOURCE = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
# TeX that escaped typesetting: $$, $...$, or a command.
RAW_TEX = re.compile(r"\$\$|(?<![\\$])\$[^$\s][^$]*\$|\\(?:frac|sqrt|begin|mathrm)\b")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from gradelib.site import build_site

    start = time.perf_counter()
    # The session's temp folder, shared with tests/test_browser.py: a notebook executed there is reused here.
    html = build_site(tmp_path_factory.getbasetemp() / "course-site", profile="quick", root=ROOT)
    print(f"site built in {time.perf_counter() - start:.0f} s")
    return html


def visible_text(page: str) -> str:
    """A page's text outside code, with each equation's TeX source (KaTeX's hidden MathML copy) removed."""
    page = re.sub(r"<pre\b.*?</pre>|<code\b.*?</code>", "", page, flags=re.S)
    page = re.sub(r'<span class="katex-mathml">.*?</math></span>', "", page, flags=re.S)
    return re.sub(r"<[^>]+>", "", page)


def test_every_notebook_has_a_page_in_course_order(site):
    index = (site / "index.html").read_text()
    links = re.findall(r'href="(\d\d_[a-z_]+)\.html"', index)
    assert list(dict.fromkeys(links)) == NAMES
    for name in NAMES:
        assert (site / f"{name}.html").exists(), f"no page for {name}"


@pytest.mark.parametrize("name", NAMES)
def test_page_typesets_math_and_shows_outputs_without_leaking_solutions(site, name):
    page = (site / f"{name}.html").read_text()
    assert page.count('class="katex"') >= 5, "equations were not typeset"
    assert "math-error" not in page, "KaTeX could not typeset an equation (its TeX is shown raw)"
    assert not RAW_TEX.search(visible_text(page)), f"raw TeX on the page: {RAW_TEX.search(visible_text(page))}"
    assert "<img" in page, "no plot on the page"
    assert "# YOUR CODE HERE" in page, "the page should show the student version"
    assert "BEGIN HIDDEN TESTS" not in page and "BEGIN SOLUTION" not in page
    assert "Traceback" not in page


@pytest.mark.parametrize("name", [*NAMES, "index"])
def test_page_reads_offline(site, name):
    """No script, and every stylesheet, font and picture comes from the site's own folder."""
    page = (site / f"{name}.html").read_text()
    assert "<script" not in page
    assert not REMOTE_RESOURCE.search(page), REMOTE_RESOURCE.search(page)
    for href in re.findall(r'(?:src|href)="([^"#:]+)"', page):
        assert (site / href).is_file(), f"{name}.html refers to {href}, which the site lacks"
    fonts = re.findall(r"url\(([^)]+\.woff2)\)", (site / "_static" / "katex" / "katex.min.css").read_text())
    assert fonts and all((site / "_static" / "katex" / font).is_file() for font in fonts)


@pytest.mark.parametrize("name", NAMES)
def test_hints_stay_collapsed_with_their_math_typeset(site, name):
    """Every <details> hint of the student notebook is a closed <details> element on the page, and the
    equations inside it are typeset, not raw dollars."""
    import nbformat

    student = nbformat.read(ROOT / "course" / name / f"{name}.ipynb", as_version=4)
    hints = [hint for cell in student.cells if cell.cell_type == "markdown"
             for hint in re.findall(r"<details>(.*?)</details>", cell.source, re.S)]
    page = (site / f"{name}.html").read_text()
    shown = re.findall(r"<details>(.*?)</details>", page, re.S)
    assert hints and len(shown) == len(hints)
    assert "<details open" not in page
    assert not [hint for hint in shown if RAW_TEX.search(visible_text(hint))], "raw TeX in a hint"
    assert all('class="katex"' in on_page for hint, on_page in zip(hints, shown) if "$" in hint)


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
    assert [list(o.data) for o in nb.cells[1].outputs] == [["text/markdown", "text/html"], ["image/png", "text/plain"]]
    assert nb.cells[2].outputs[1].data == {"image/png": "iVBORimage"}
    assert "widgets" not in nb.metadata


def test_pages_refuse_a_student_notebook_that_does_not_match_the_solution():
    import nbformat

    student = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")])
    with pytest.raises(ValueError, match="differ in length"):
        page_notebook(student, executed)


def test_markdown_written_for_jupyter_reads_the_same_in_myst():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "[![Open In Colab](https://colab.example/badge.svg)](https://colab.example/nb)\n\n"
        "the notes' $X + Z \\approx\n\\begin{pmatrix}2.5&4\\end{pmatrix}$ agrees.\n\n"
        "$$\n\\begin{aligned} a &= b \\end{aligned}\n$$\n\n"
        "<details><summary>Hint 1</summary>\n\nDivide by $e^{z_\\max/T}$, not $x_\\mathrm{max}$ or $\\limsup_n$.\n\n</details>")])
    assert myst_markdown(nb) == 1
    assert nb.cells[0].source == (
        "[Open In Colab](https://colab.example/nb)\n\n"
        "the notes' $X + Z \\approx \\begin{pmatrix}2.5&4\\end{pmatrix}$ agrees.\n\n"
        "$$\n\\begin{aligned} a &= b \\end{aligned}\n$$\n\n\n"
        "::::{dropdown} Hint 1\nDivide by $e^{z_{\\max}/T}$, not $x_\\mathrm{max}$ or $\\limsup_n$.\n::::\n")


def test_a_small_book_builds_into_typeset_pages(tmp_path):
    """Jupyter Book 2 and the page writer, on one made-up page (no notebook is executed): every equation,
    a hint's included, typeset by KaTeX; outputs shown; internal links between pages."""
    import base64

    import nbformat

    png = base64.b64encode(bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c63f8cfc0f01f0005000201a5d5e1f40000000049454e44ae426082")).decode()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Made up\n\nInline $\\frac{a}{b}$ and\n\n$$\n\\sqrt{d_k}\n$$\n\n"
                                      "<details><summary>Hint 1</summary>\n\nUse $q \\cdot k$.\n\n</details>"),
        nbformat.v4.new_code_cell("print(1)", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="loss 0.25\n"),
            nbformat.v4.new_output("display_data", {"image/png": png, "text/plain": "<Figure>"})])])
    myst_markdown(nb)
    write_book(tmp_path / "book", {"01_made_up": nb}, title="A test", template=ROOT / "site" / "template")
    write_pages(build_content(tmp_path / "book"), tmp_path / "html", title="A test", assets=ROOT / "site",
                order=["intro.md", "01_made_up.ipynb"])
    page = (tmp_path / "html" / "01_made_up.html").read_text()
    assert page.count('class="katex"') == 3 and page.count('class="katex-display"') == 1
    hint = re.search(r"<details>(.*?)</details>", page, re.S).group(1)
    assert "<summary>Hint 1</summary>" in hint and 'class="katex"' in hint
    assert "loss 0.25" in page and re.search(r'<img src="_images/[0-9a-f]+\.png"', page)
    assert "<h1>Made up</h1>" in page
    assert '<a href="01_made_up.html">Made up</a>' in (tmp_path / "html" / "index.html").read_text()


def test_vendored_katex_stylesheet_matches_the_katex_of_jupyter_book():
    """site/katex lays out the HTML that Jupyter Book's own KaTeX wrote: the two versions must agree."""
    import jupyter_book

    bundle = (Path(jupyter_book.__file__).parent / "dist" / "jupyter-book.cjs").read_text()
    bundled = re.search(r"var katex = \{\s*/\*\*\s*\* Current KaTeX version\s*\*/\s*version: \"([\d.]+)\"", bundle)
    if bundled is None:
        pytest.skip("this jupyter-book bundle does not spell KaTeX's version as 2.1 does")
    vendored = re.search(r'katex-version:after\{content:"([\d.]+)"\}', (ROOT / "site" / "katex" / "katex.min.css").read_text())
    # Within a minor version KaTeX keeps its HTML and stylesheet in step; a new minor needs a new site/katex.
    assert vendored.group(1).split(".")[:2] == bundled.group(1).split(".")[:2], (vendored.group(1), bundled.group(1))
