"""Build the course's static web site from the notebooks, offline, with Jupyter Book 2.

    gradelib site                       # default profile, into _site/_build/html
    gradelib site --profile quick       # what the test builds: fast, same pages

Each page is the *student* notebook (exercises stay blank, hidden tests stay hidden) showing the
outputs of a run of the instructor's solution: plots, worked examples and the self-check tables, so a
reader sees what a finished notebook produces. Interactive explorers cannot run on a static page; each
one is replaced by a picture of its first view, taken from the widget state that nbclient records
while it executes the notebook.

Jupyter Book 2 (the MyST engine) reads the pages and writes the site's content
(``jupyter-book build --site``): each page as a MyST syntax tree in which KaTeX has already typeset
every equation. Its own HTML export does not fit an offline course: it downloads its theme (a web app)
from the network on first use, and its pages take KaTeX's stylesheet from a CDN and need a web server.
So this module writes the HTML from that content itself: plain pages with relative links, no script,
and KaTeX's stylesheet and fonts bundled from ``site/katex``. The site builds without a network and
reads from ``file://`` with none.

Executed notebooks are kept in ``<out>/executed/`` and reused while the solution, the gradelib sources
and the profile are unchanged, so editing one notebook re-runs only that one. Those that must run, run two
at a time, each kernel on its share of the cores.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat

from gradelib import _notebooks

TITLE = "Generative AI from first principles"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
STATIC_NOTE = "*Static snapshot of an interactive explorer: open the notebook to use it.*"
# <details><summary>Hint 1</summary> ... </details> in a markdown cell: a hint, closed until the reader opens it.
HINT = re.compile(r"<details>\s*<summary>(?P<title>.*?)</summary>(?P<body>.*?)</details>", re.S)
# An operator name as a bare sub- or superscript (z_\max); TeX's operators take no argument, so braces change nothing.
SCRIPT_OPERATOR = re.compile(r"(?P<script>[_^])(?P<operator>\\(?:max|min|sup|inf|lim|liminf|limsup|arg|det|exp|log|ln|Pr|gcd))\b")
REMOTE_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\(https?://[^)\s]+\)")


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
    # tqdm pads with no-break and figure spaces; a page shows plain ones.
    return re.sub(r"[^\S\n]", " ", html.unescape(" ".join(part for part in parts if part))).strip()


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
                note = {"text/markdown": STATIC_NOTE, "text/html": f"<p><em>{html.escape(STATIC_NOTE.strip('*'))}</em></p>"}
                new_outputs.append(nbformat.v4.new_output("display_data", note))
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


def _hints_as_dropdowns(source: str) -> tuple[str, int]:
    """Each ``<details>`` hint becomes a MyST dropdown (the page still shows a closed ``<details>``).

    Jupyter Book 2 keeps the inside of raw HTML as text, so the equations of a ``<details>`` hint would
    reach the page as raw TeX; in a dropdown they are MyST and get typeset like every other equation.
    """
    return HINT.subn(lambda m: f"\n::::{{dropdown}} {m['title'].strip()}\n{m['body'].strip()}\n::::\n", source)


def _join_environments_to_open_inline_math(source: str) -> str:
    """``$X \\approx`` + newline + ``\\begin{pmatrix}...$``: put the environment on the line of its ``$``.

    MyST starts a display-math block at every line that begins with ``\\begin{...}``, even inside an
    inline ``$...$`` that Jupyter renders fine, which would leave the ``$`` and the TeX before it raw.
    """
    lines: list[str] = []
    for line in source.split("\n"):
        opens_inline_math = bool(lines) and "$$" not in lines[-1] and lines[-1].count("$") % 2 == 1
        if opens_inline_math and line.lstrip().startswith("\\begin{"):
            lines[-1] += " " + line.lstrip()
        else:
            lines.append(line)
    return "\n".join(lines)


def _brace_script_operators(source: str) -> str:
    """``z_\\max`` -> ``z_{\\max}``: KaTeX, unlike MathJax, refuses a bare operator name as a script."""
    return SCRIPT_OPERATOR.sub(lambda m: f"{m['script']}{{{m['operator']}}}", source)


def _remote_images_as_text(source: str) -> str:
    """``[![Open In Colab](https://.../badge.svg)](link)`` -> ``[Open In Colab](link)``.

    A picture from the web would make Jupyter Book fetch it at build time and the page reach out when
    read; its alt text keeps the link and needs neither.
    """
    return REMOTE_IMAGE.sub(lambda m: m["alt"], source)


def myst_markdown(nb) -> int:
    """Adapt ``nb``'s markdown cells, written for Jupyter, to MyST as Jupyter Book 2 reads it; return the hints."""
    hints = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            source, count = _hints_as_dropdowns(cell.source)
            source = _join_environments_to_open_inline_math(_brace_script_operators(source))
            cell.source, hints = _remote_images_as_text(source), hints + count
    return hints


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else []:
            if line.startswith("# "):
                return line[2:].strip()
    return fallback


def write_book(book: Path, pages: dict[str, object], title: str, template: Path) -> None:
    """A Jupyter Book 2 project: an intro page, then one page per notebook in course order.

    ``template`` is the folder of the site template to name (``site/template``): with none, Jupyter
    Book would ask the network for its default theme.
    """
    book.mkdir(parents=True, exist_ok=True)
    for name, nb in pages.items():
        nbformat.write(nb, book / f"{name}.ipynb")
    toc = "    - file: intro.md\n" + "".join(f"    - file: {name}.ipynb\n" for name in pages)
    (book / "myst.yml").write_text(
        "version: 1\n"
        "project:\n"
        f"  title: {json.dumps(title)}\n"
        "  toc:\n" + toc +
        "site:\n"
        f"  template: {json.dumps(str(template.resolve()))}\n")
    contents = "\n".join(f"{i}. [{_title(nb, name)}]({name}.ipynb)" for i, (name, nb) in enumerate(pages.items(), start=1))
    (book / "intro.md").write_text(textwrap.dedent("""\
        # {title}

        A graded course that builds modern generative AI from first principles, one notebook per
        topic. Each page shows a notebook as a student receives it (exercises blank), with the outputs
        of a run of the reference solution, so you can see what a finished notebook produces.
        To work through the course yourself, open the notebooks in JupyterLab or on Colab.

        """).format(title=title) + contents + "\n")


def build_content(book: Path) -> Path:
    """Run ``jupyter-book build --site`` in ``book``; return the folder holding its content (pages as MyST AST)."""
    if shutil.which("node") is None:
        # Jupyter Book would offer to download Node.js itself, which needs the network.
        raise RuntimeError("Jupyter Book 2 runs on Node.js (>= 18), which is not on PATH: apt-get install nodejs")
    command = [sys.executable, "-m", "jupyter_book", "build", "--site"]
    # Each run, Jupyter Book asks the npm registry whether a newer mystmd exists, only to print an upgrade
    # notice: a closed local port answers instead, so that a build makes no request at all.
    env = dict(os.environ, npm_config_registry="http://127.0.0.1:9/")
    # stdin closed: without Node.js, Jupyter Book asks whether to install it and must not wait for an answer.
    result = subprocess.run(command, cwd=book, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build --site failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return book / "_build" / "site"


# ---------------------------------------------------------------------------------------------------
# HTML pages from the content that Jupyter Book wrote

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# MyST node types that only wrap their children, as one HTML tag ...
TAGS = {"paragraph": "p", "emphasis": "em", "strong": "strong", "blockquote": "blockquote", "listItem": "li",
        "tableRow": "tr", "table": "table", "subscript": "sub", "superscript": "sup", "delete": "del", "underline": "u",
        "summary": "summary", "caption": "figcaption", "legend": "figcaption", "container": "figure",
        "details": "details"}  # a hint stays closed, as in the notebook: the reader opens it
# ... or as a tag with attributes: node -> (tag, attributes).
CELL_CLASSES = {"notebook-content": "cell markdown", "notebook-code": "cell code"}
ELEMENTS = {
    "block": lambda node: ("section", {"class_": CELL_CLASSES.get(node.get("kind"), "block"), "id": node.get("html_id")}),
    "heading": lambda node: (f"h{min(max(int(node.get('depth', 2)), 1), 6)}", {"id": node.get("html_id")}),
    "list": lambda node: ("ol", {"start": node.get("start")}) if node.get("ordered") else ("ul", {}),
    "tableCell": lambda node: ("th" if node.get("header") else "td",
                               {"style": node.get("align") and f"text-align: {node['align']}"}),
    "span": lambda node: ("span", {"class_": node.get("class")}),
    "div": lambda node: ("div", {"class_": node.get("class")}),
    "abbreviation": lambda node: ("abbr", {"title": node.get("title")}),
    "crossReference": lambda node: ("a", {"href": "#" + node.get("html_id", node.get("identifier", ""))}),
    "admonition": lambda node: ("aside", {"class_": f"admonition {node.get('kind', 'note')}"}),
    "admonitionTitle": lambda node: ("p", {"class_": "admonition-title"}),
    "outputs": lambda node: ("div", {"class_": "outputs"}),
}
# Node types that a page does not show.
HIDDEN = {"comment", "mystTarget"}
# The output bundle's richest type that a static page can show, in order of preference.
MIME_ORDER = ("text/html", "image/svg+xml", "image/png", "image/jpeg", "image/gif", "text/markdown", "text/plain")


def _attrs(**attrs) -> str:
    return "".join(f' {key.rstrip("_")}="{html.escape(str(value))}"' for key, value in attrs.items() if value not in (None, ""))


class PageWriter:
    """Writes one page's HTML from its MyST syntax tree (the ``mdast`` of Jupyter Book's content JSON).

    ``files`` maps each page's slug to its HTML file (internal links point there); pictures that the
    content references are copied from ``public`` (Jupyter Book's folder for them) into ``images``.
    Node types it does not know show their children, and are listed in ``unknown``.
    """

    def __init__(self, files: dict[str, str], public: Path, images: Path):
        self.files, self.public, self.images = files, public, images
        self.unknown: set[str] = set()

    def __call__(self, node: dict) -> str:
        kind = node.get("type", "")
        if kind in TAGS or kind in ELEMENTS:
            tag, attrs = (TAGS[kind], {}) if kind in TAGS else ELEMENTS[kind](node)
            return f"<{tag}{_attrs(**attrs)}>{self.children(node)}</{tag}>"
        if kind in HIDDEN:
            return ""
        write = getattr(self, "node_" + kind, None)
        if write is None:
            self.unknown.add(kind)
            return self.children(node)
        return write(node)

    def children(self, node: dict) -> str:
        return "".join(self(child) for child in node.get("children", []))

    def asset(self, path: str) -> str:
        """Copy a picture that the content names (``/hash.png``) next to the pages; its relative URL."""
        name = Path(path).name
        self.images.mkdir(parents=True, exist_ok=True)
        if (self.public / name).exists() and not (self.images / name).exists():
            shutil.copy(self.public / name, self.images / name)
        return f"{self.images.name}/{name}"

    # text and inline markup
    def node_text(self, node):
        return html.escape(node.get("value", ""), quote=False)

    def node_inlineCode(self, node):
        return f"<code>{html.escape(node.get('value', ''), quote=False)}</code>"

    def node_inlineMath(self, node):
        # Jupyter Book typeset it with KaTeX at build time: "html" holds the result.
        if "html" in node:
            return node["html"]
        return f'<code class="math-error">{html.escape(node.get("value", ""))}</code>'

    def node_math(self, node):
        return f'<div class="math"{_attrs(id=node.get("html_id"))}>{self.node_inlineMath(node)}</div>'

    def node_break(self, node):
        return "<br>"

    def node_html(self, node):
        return node.get("value", "")

    def node_link(self, node):
        url = node.get("url", "")
        if node.get("internal"):
            slug, _, anchor = url.lstrip("/").partition("#")
            url = self.files.get(slug, "index.html") + (f"#{anchor}" if anchor else "")
        return f"<a{_attrs(href=url)}>{self.children(node)}</a>"

    def node_image(self, node):
        # Jupyter Book copied each local picture into its public folder; anything else shows its alt text.
        if not (self.public / Path(node.get("url", "")).name).is_file():
            return html.escape(node.get("alt", ""), quote=False)
        return f"<img{_attrs(src=self.asset(node['url']), alt=node.get('alt', ''), width=node.get('width'))}>"

    # blocks
    def node_root(self, node):
        return self.children(node)

    def node_thematicBreak(self, node):
        return "<hr>"

    def node_code(self, node):
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound

        code = node.get("value", "")
        try:
            body = highlight(code, get_lexer_by_name(node.get("lang") or "text"), HtmlFormatter(nowrap=True))
        except ClassNotFound:
            body = html.escape(code, quote=False)
        return f'<pre class="highlight"><code>{body}</code></pre>'

    # notebook outputs
    def node_output(self, node):
        output = node.get("jupyter_data") or {}
        kind = output.get("output_type")
        if kind == "stream":
            text = "".join(output.get("text", ""))
            return f'<pre class="output {html.escape(output.get("name", "stdout"))}">{html.escape(ANSI.sub("", text), quote=False)}</pre>'
        if kind == "error":
            traceback = output.get("traceback", "")
            text = "\n".join(traceback) if isinstance(traceback, list) else traceback
            return f'<pre class="output error">{html.escape(ANSI.sub("", text), quote=False)}</pre>'
        bundle = output.get("data", {})
        for mime in MIME_ORDER:
            if mime in bundle:
                return self.bundle_item(mime, bundle[mime])
        return ""

    def bundle_item(self, mime: str, item: dict) -> str:
        if mime.startswith("image/"):
            return f'<div class="output image"><img{_attrs(src=self.asset(item["path"]), alt="output")}></div>' \
                if "path" in item else ""
        content = item.get("content")
        if content is None and "path" in item:  # a long output that Jupyter Book moved into a file
            content = (self.public / Path(item["path"]).name).read_text()
        content = content or ""
        if mime == "text/html":
            return f'<div class="output html">{content}</div>'
        return f'<pre class="output text">{html.escape(ANSI.sub("", content), quote=False)}</pre>'


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="_static/katex/katex.min.css">
<link rel="stylesheet" href="_static/pygments.css">
<link rel="stylesheet" href="_static/style.css">
</head>
<body>
<nav class="sidebar"><a class="site-title" href="index.html">{site}</a><ol>{nav}</ol></nav>
<main><article>
<h1>{heading}</h1>
{content}
</article>
<footer class="pager">{pager}</footer></main>
</body>
</html>
"""


def write_pages(content: Path, out: Path, *, title: str, assets: Path, order: list[str]) -> dict[str, Path]:
    """Static HTML from Jupyter Book's site content: ``index.html``, then ``<name>.html`` per notebook.

    ``order`` lists the pages' source files in course order (``intro.md``, ``01_attention.ipynb``, ...).
    Returns each source file's HTML page.
    """
    from pygments.formatters import HtmlFormatter

    pages = {}
    for path in (content / "content").glob("*.json"):
        page = json.loads(path.read_text())
        pages[Path(page["location"]).name] = page
    missing = [source for source in order if source not in pages]
    if missing:
        raise RuntimeError(f"Jupyter Book wrote no content for {missing}")
    file_of = {source: "index.html" if source == order[0] else f"{Path(source).stem}.html" for source in order}
    writer = PageWriter({pages[s]["slug"]: f for s, f in file_of.items()}, content / "public", out / "_images")

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(assets / "katex", out / "_static" / "katex", dirs_exist_ok=True)
    shutil.copy(assets / "style.css", out / "_static" / "style.css")
    (out / "_static" / "pygments.css").write_text(HtmlFormatter().get_style_defs(".highlight"))

    titles = {source: pages[source]["frontmatter"].get("title", Path(source).stem) for source in order}
    written = {}
    for i, source in enumerate(order):
        nav = "".join(f'<li{_attrs(class_="current" if s == source else None)}><a href="{file_of[s]}">'
                      f"{html.escape(titles[s])}</a></li>" for s in order[1:])
        neighbours = [("prev", "← ", order[i - 1], "") if i > 0 else None,
                      ("next", "", order[i + 1], " →") if i + 1 < len(order) else None]
        pager = "".join(f'<a class="{cls}" href="{file_of[s]}">{before}{html.escape(titles[s])}{after}</a>'
                        for cls, before, s, after in filter(None, neighbours))
        heading = titles[source]
        body = writer(pages[source]["mdast"])
        written[source] = out / file_of[source]
        written[source].write_text(PAGE.format(
            title=html.escape(heading if i == 0 else f"{heading} · {title}"), site=html.escape(title), nav=nav,
            heading=html.escape(heading), content=body, pager=pager))
    if writer.unknown:
        print(f"[site] shown by their children only (no HTML of their own): {sorted(writer.unknown)}", flush=True)
    return written


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


def _is_cached(cache: Path, name: str, fingerprint: str) -> bool:
    stamp = cache / f"{name}.fingerprint"
    return (cache / f"{name}.ipynb").exists() and stamp.exists() and stamp.read_text() == fingerprint


def _executed_solution(root: Path, name: str, profile: str, cache: Path, sources_digest: str,
                       threads: int | None = None):
    """The solution notebook run in ``profile``, reused from ``cache`` while nothing it depends on changed.
    ``threads`` caps the kernel's math-library threads (when several notebooks run at once)."""
    cached, stamp = cache / f"{name}.ipynb", cache / f"{name}.fingerprint"
    fingerprint = _fingerprint(root, name, profile, sources_digest)
    if _is_cached(cache, name, fingerprint):
        print(f"[site] {name}: outputs unchanged since the last build, reused", flush=True)
        return nbformat.read(cached, as_version=4)
    start = time.perf_counter()
    print(f"[site] {name}: running the solution ({profile} profile) ...", flush=True)
    threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
    executed, _ = _notebooks.execute_notebook(_notebooks.solution_notebook(root, name), profile=profile,
                                              extra_env=threads_env)
    cache.mkdir(parents=True, exist_ok=True)
    nbformat.write(executed, cached)
    stamp.write_text(fingerprint)
    print(f"[site] {name}: ran in {time.perf_counter() - start:.0f} s", flush=True)
    return executed


def _execute_in_parallel(root: Path, names: list[str], profile: str, cache: Path, sources_digest: str,
                         workers: int) -> None:
    """Run the solutions whose outputs are not in ``cache`` yet, ``workers`` notebooks at a time, each in a Python
    process of its own and its kernel on its share of the cores (small torch ops on every core of a shared
    machine slow down several times over); they land in ``cache``, where the build reads them."""
    stale = [name for name in names if not _is_cached(cache, name, _fingerprint(root, name, profile, sources_digest))]
    if workers < 2 or len(stale) < 2:
        return
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    code = ("import sys; from pathlib import Path; from gradelib.site import _executed_solution; "
            "_executed_solution(Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5], int(sys.argv[6]))")

    def run(name: str) -> None:
        subprocess.run([sys.executable, "-c", code, str(root), name, profile, str(cache), sources_digest, str(threads)],
                       check=True)

    # Later notebooks are the longer ones: started first, they do not leave one running alone at the end.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, reversed(stale)))


def build_site(out: Path, *, profile: str = "default", root: Path | None = None, names: list[str] | None = None,
               workers: int = 2) -> Path:
    """Execute each solution notebook, build the pages and the HTML; return the folder holding index.html.
    ``workers``: how many notebooks run at once (1: one after the other)."""
    root = root or _notebooks.project_root()
    names = names or _notebooks.assignments(root)
    out = Path(out).resolve()
    book = out / "book"
    if book.exists():
        shutil.rmtree(book)
    pages = {}
    sources_digest = _sources_digest(root)
    _execute_in_parallel(root, names, profile, out / "executed", sources_digest, workers)
    for name in names:
        executed = _executed_solution(root, name, profile, out / "executed", sources_digest)
        student = nbformat.read(root / "course" / name / f"{name}.ipynb", as_version=4)
        pages[name] = page_notebook(student, executed)
        frozen, hints = freeze_widgets(pages[name]), myst_markdown(pages[name])
        print(f"[site] {name}: {frozen} explorer(s) frozen to pictures, {hints} hint(s)", flush=True)
    write_book(book, pages, title=TITLE, template=root / "site" / "template")
    print("[site] building the site content with Jupyter Book", flush=True)
    content = build_content(book)
    html_dir = out / "_build" / "html"
    if html_dir.exists():
        shutil.rmtree(html_dir)
    order = ["intro.md", *(f"{name}.ipynb" for name in pages)]
    write_pages(content, html_dir, title=TITLE, assets=root / "site", order=order)
    print(f"[site] open {html_dir / 'index.html'}")
    return html_dir
