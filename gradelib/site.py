"""Build the course's static web site from the notebooks, offline, with Jupyter Book.

    gradelib site                       # default profile, into _site/
    gradelib site --profile quick       # what the test builds: fast, same pages

Each page is the *student* notebook (exercises stay blank, hidden tests stay hidden) showing the
outputs of a run of the instructor's solution: plots, worked examples and the self-check tables, so a
reader sees what a finished notebook produces. Interactive explorers cannot run on a static page; each
one is replaced by a picture of its first view, taken from the widget state that nbclient records
while it executes the notebook.

Executed notebooks are kept in ``<out>/executed/`` and reused while the solution, the gradelib sources
and the profile are unchanged, so editing one notebook re-runs only that one.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat

from gradelib import _notebooks

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
STATIC_NOTE = "*Static snapshot of an interactive explorer: open the notebook to use it.*"


def _widget_outputs(model_id: str, states: dict, seen: set[str] | None = None) -> list[dict]:
    """Every output captured by the Output widgets inside widget ``model_id`` (children first to last)."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in states:
        return []
    seen.add(model_id)
    model = states[model_id]
    state = model.get("state", {})
    outputs = list(state.get("outputs", [])) if model.get("model_name") == "OutputModel" else []
    if model.get("model_name") == "ImageModel":  # its picture travels as a base64 buffer at path ["value"]
        mime = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}.get(state.get("format", "png"))
        for buffer in model.get("buffers", []):
            if buffer.get("path") == ["value"] and buffer.get("encoding") == "base64" and mime:
                outputs.append({"output_type": "display_data", "metadata": {}, "data": {mime: buffer["data"]}})
    for child in state.get("children", []):
        outputs += _widget_outputs(str(child).removeprefix("IPY_MODEL_"), states, seen)
    return outputs


def _widget_text(model_id: str, states: dict) -> str:
    """The visible text of a widget made of labels (a tqdm.auto bar: description, bar, counts)."""
    model = states.get(model_id, {})
    state = model.get("state", {})
    parts = [str(state.get("value", ""))] if model.get("model_name") in ("HTMLModel", "LabelModel") else []
    parts += [_widget_text(str(child).removeprefix("IPY_MODEL_"), states) for child in state.get("children", [])]
    return html.unescape(" ".join(part for part in parts if part)).replace("\xa0", " ").strip()


def freeze_widgets(nb) -> int:
    """Replace widget views in ``nb``'s outputs by static equivalents; return how many explorers became pictures.

    An explorer (a widget holding an Output widget with a figure) becomes its figure; a progress bar
    becomes its final text, e.g. ``training: 100% 400/400 [00:05<00:00, loss=0.01]``.
    """
    states = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    frozen = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        new_outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                new_outputs.append(output)
                continue
            captured = [o for o in _widget_outputs(view["model_id"], states) if o.get("output_type") != "stream"]
            pictures = [o for o in captured if "image/png" in o.get("data", {})]
            if pictures:
                new_outputs.append(nbformat.v4.new_output("display_data", {"text/markdown": STATIC_NOTE}))
                new_outputs += [nbformat.from_dict(o) for o in pictures]
                frozen += 1
            elif text := _widget_text(view["model_id"], states):
                new_outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text + "\n"))
        cell.outputs = new_outputs
    nb.metadata.pop("widgets", None)
    return frozen


def page_notebook(student, executed):
    """The student notebook carrying the executed solution's outputs, cell for cell."""
    page = nbformat.from_dict(student)
    if len(page.cells) != len(executed.cells):
        raise ValueError(f"student and solution notebooks differ in length ({len(page.cells)} vs {len(executed.cells)} cells)")
    for page_cell, run_cell in zip(page.cells, executed.cells):
        if page_cell.cell_type == "code":
            page_cell.outputs = run_cell.get("outputs", [])
            page_cell.execution_count = run_cell.get("execution_count")
    page.metadata["widgets"] = executed.metadata.get("widgets", {})
    return page


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else []:
            if line.startswith("# "):
                return line[2:].strip()
    return fallback


def write_book(book: Path, pages: dict[str, object], title: str) -> None:
    """A Jupyter Book project: one chapter per notebook, in course order, built without executing anything."""
    book.mkdir(parents=True, exist_ok=True)
    for name, nb in pages.items():
        nbformat.write(nb, book / f"{name}.ipynb")
    chapters = "\n".join(f"  - file: {name}" for name in pages)
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{chapters}\n")
    (book / "_config.yml").write_text(textwrap.dedent(f"""\
        title: "{title}"
        author: the course authors
        only_build_toc_files: true
        execute:
          execute_notebooks: "off"
        parse:
          myst_enable_extensions: [dollarmath, amsmath, colon_fence]
        html:
          use_repository_button: false
          use_issues_button: false
        launch_buttons:
          notebook_interface: jupyterlab
        sphinx:
          config:
            html_show_copyright: false
            suppress_warnings: ["mystnb.unknown_mime_type"]
        """))
    contents = "\n".join(f"{i}. [{_title(nb, name)}]({name}.ipynb)" for i, (name, nb) in enumerate(pages.items(), start=1))
    (book / "intro.md").write_text(textwrap.dedent("""\
        # {title}

        A graded course that builds modern generative AI from first principles, one notebook per
        topic. Each page shows a notebook as a student receives it (exercises blank), with the outputs
        of a run of the reference solution, so you can see what a finished notebook produces.
        To work through the course yourself, open the notebooks in JupyterLab or on Colab.

        """).format(title=title) + contents + "\n")


def _sources_digest(root: Path) -> str:
    """One hash of every gradelib source file: each notebook's outputs depend on them."""
    digest = hashlib.sha256()
    for path in sorted((root / "gradelib").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _fingerprint(root: Path, name: str, profile: str, sources_digest: str) -> str:
    """What a notebook's outputs depend on: the solution notebook, the gradelib sources and the profile."""
    digest = hashlib.sha256(f"{profile}\n{sources_digest}\n".encode())
    digest.update(_notebooks.solution_notebook(root, name).read_bytes())
    return digest.hexdigest()


def _executed_solution(root: Path, name: str, profile: str, cache: Path, sources_digest: str):
    """The solution notebook run in ``profile``, reused from ``cache`` while nothing it depends on changed."""
    cached, stamp = cache / f"{name}.ipynb", cache / f"{name}.fingerprint"
    fingerprint = _fingerprint(root, name, profile, sources_digest)
    if cached.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        print(f"[site] {name}: outputs unchanged since the last build, reused", flush=True)
        return nbformat.read(cached, as_version=4)
    start = time.perf_counter()
    print(f"[site] {name}: running the solution ({profile} profile) ...", flush=True)
    executed, _ = _notebooks.execute_notebook(_notebooks.solution_notebook(root, name), profile=profile)
    cache.mkdir(parents=True, exist_ok=True)
    nbformat.write(executed, cached)
    stamp.write_text(fingerprint)
    print(f"[site] {name}: ran in {time.perf_counter() - start:.0f} s", flush=True)
    return executed


def build_site(out: Path, *, profile: str = "default", root: Path | None = None, names: list[str] | None = None) -> Path:
    """Execute each solution notebook, build the pages and the HTML; return the folder holding index.html."""
    root = root or _notebooks.project_root()
    names = names or _notebooks.assignments(root)
    out = Path(out).resolve()
    book = out / "book"
    if book.exists():
        shutil.rmtree(book)
    pages = {}
    sources_digest = _sources_digest(root)
    for name in names:
        executed = _executed_solution(root, name, profile, out / "executed", sources_digest)
        student = nbformat.read(root / "course" / name / f"{name}.ipynb", as_version=4)
        pages[name] = page_notebook(student, executed)
        frozen = freeze_widgets(pages[name])
        print(f"[site] {name}: {frozen} explorer(s) frozen to pictures", flush=True)
    write_book(book, pages, title="Generative AI from first principles")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(book),
               "--path-output", str(out), "--builder", "html"]
    print("[site] building HTML with Jupyter Book", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    html = out / "_build" / "html"
    print(f"[site] open {html / 'index.html'}")
    return html
