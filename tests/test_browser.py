"""A real browser: JupyterLab on localhost, notebook 01 opened in headless Chromium and run top to bottom;
then 01's page of the course site (`make site`) opened from file:// with the network off.

Checks what only a browser can: the attention explorer's widgets render and redraw when a control
changes, plots appear, and no cell shows an error. Screenshots go to reports/browser-*.png.
On the site's page: the equations are typeset (KaTeX's stylesheet and fonts load from the site
itself), no raw TeX shows, the hints are closed and typeset too, and the page asks nothing of the network.

Needs Debian's chromium (`.ci/run` installs it) and Playwright (the dev extra). Outside CI the test
skips when chromium is missing; in CI (CI=true) a missing browser is a failure.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's services, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
NOTEBOOK = "01_attention"
SCREENSHOTS = ROOT / "reports"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run should have installed Debian's chromium", pytrace=False)
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(settings_dir: Path) -> None:
    """JupyterLab user settings: render every cell (no windowing) and never ask about news or updates."""
    notebook = settings_dir / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    apputils = settings_dir / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "solutions" / NOTEBOOK / f"{NOTEBOOK}.ipynb", work)
    write_settings(work / "settings")
    port, token = free_port(), "browser-test"
    env = dict(os.environ, GRADELIB_PROFILE="quick", JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"))
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as a student gets
    server_log = open(work / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
         "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=server_log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        server_log.close()
        pytest.fail("JupyterLab did not start:\n" + (work / "server.log").read_text()[-3000:])
    yield f"{url}/lab/tree/{NOTEBOOK}.ipynb?token={token}"
    server.terminate()
    server.wait(timeout=30)
    server_log.close()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module: Playwright's sync API allows one running instance at a time."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(lab, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(lab)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel", timeout=120_000)
    page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const code = panel.content.widgets.filter(cell => cell.model.type === 'code');
            return panel.sessionContext.session.kernel.status === 'idle'
                && code.every(cell => cell.model.executionCount !== null);
        }""", timeout=600_000, polling=1000)
    yield page
    page.close()


def test_every_cell_ran_without_an_error(page):
    outputs = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .filter(cell => cell.model.type === 'code').map(cell => cell.model.outputs.toJSON())""")
    errors = [o for cell in outputs for o in cell if o["output_type"] == "error"]
    assert not errors, f"{len(errors)} cell(s) failed, first: {errors[0]['ename']}: {errors[0]['evalue']}"
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0
    assert len(outputs) > 20


def test_plots_appear(page):
    plots = page.locator(".jp-RenderedImage img")
    assert plots.count() >= 3
    plots.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "browser-01-plot.png"))


def test_attention_explorer_renders_and_redraws_on_change(page):
    explorer = page.locator(".jp-OutputArea-output .widget-vbox", has=page.locator("select")).first
    explorer.scroll_into_view_if_needed()
    heatmap = explorer.locator("img")
    heatmap.wait_for(state="visible", timeout=60_000)
    before = heatmap.get_attribute("src")
    explorer.screenshot(path=str(SCREENSHOTS / "browser-01-explorer-before.png"))

    explorer.locator("select").select_option(index=1)
    page.wait_for_function("([el, before]) => { const img = el.querySelector('img'); return img && img.src !== before; }",
                           arg=[explorer.element_handle(), before], timeout=60_000)
    explorer.screenshot(path=str(SCREENSHOTS / "browser-01-explorer-after.png"))
    assert heatmap.get_attribute("src") != before


# The course site, read offline --------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_page(tmp_path_factory, browser):
    """01's page of the course site opened from file:// in Chromium with the network off.

    Yields (page, outside): ``outside`` lists every request that was not for a file; each was refused.
    The build shares its executed notebooks with tests/test_site.py through the session's temp folder.
    """
    from gradelib.site import build_site

    html = build_site(tmp_path_factory.getbasetemp() / "course-site", profile="quick", root=ROOT, names=[NOTEBOOK])
    outside = []

    def refuse(route):
        outside.append(route.request.url)
        route.abort("internetdisconnected")

    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
    context.route(re.compile(r"^(?!file:)"), refuse)
    page = context.new_page()
    page.on("request", lambda request: None if request.url.startswith("file:") else outside.append(request.url))
    page.goto((html / f"{NOTEBOOK}.html").as_uri(), wait_until="load")
    page.evaluate("document.fonts.ready.then(() => true)")
    page.screenshot(path=str(html.parent / "offline-page.png"))
    yield page, outside
    context.close()


def markdown_text(page) -> str:
    """The text a reader sees in the page's markdown cells, hints included, without KaTeX's hidden MathML copy."""
    return page.evaluate("""() => [...document.querySelectorAll('section.cell.markdown')].map(cell => {
        const copy = cell.cloneNode(true);
        copy.querySelectorAll('.katex-mathml').forEach(mathml => mathml.remove());
        return copy.textContent;
    }).join('\\n')""")


def test_site_page_offline_shows_typeset_equations_and_no_raw_tex(site_page):
    page, outside = site_page
    assert outside == [], f"the page asked the network for {outside[:3]}"
    assert page.locator(".katex").count() >= 20 and page.locator(".katex-display").count() >= 3
    # KaTeX's stylesheet applied: its MathML copy is clipped away and its HTML laid out, fraction bars drawn.
    layout = page.evaluate("""() => {
        const mathml = document.querySelector('.katex .katex-mathml'), shown = document.querySelector('.katex .katex-html');
        const bar = document.querySelector('.katex .frac-line');
        return {mathml: mathml.getBoundingClientRect().width, shown: shown.getBoundingClientRect().width,
                position: getComputedStyle(mathml).position, bar: bar && bar.getBoundingClientRect().width};
    }""")
    assert layout["position"] == "absolute" and layout["mathml"] <= 1 and layout["shown"] > 5 and layout["bar"] > 5, layout
    fonts = page.evaluate("() => [...document.fonts].filter(f => f.family.includes('KaTeX')).map(f => f.status)")
    assert "loaded" in fonts and "error" not in fonts, f"KaTeX fonts: {fonts}"
    text = markdown_text(page)
    raw = re.findall(r".{0,30}(?:\$\$|\\frac|\\sqrt|\\begin|\\mathrm|(?<![\\$])\$[^$\s][^$]*\$).{0,30}", text)
    assert not raw, f"raw TeX on the page: {raw[:3]}"


def test_site_page_offline_hints_stay_closed_and_open_typeset(site_page):
    import nbformat

    page, _ = site_page
    student = nbformat.read(ROOT / "course" / NOTEBOOK / f"{NOTEBOOK}.ipynb", as_version=4)
    hints = sum(cell.source.count("<details>") for cell in student.cells if cell.cell_type == "markdown")
    details = page.locator("details")
    assert details.count() == hints >= 1
    assert page.evaluate("() => [...document.querySelectorAll('details')].every(d => !d.open)")
    hint = page.locator("details", has=page.locator(".katex")).first
    equation = hint.locator(".katex-html").first
    assert not equation.is_visible()
    hint.locator("summary").click()
    assert equation.is_visible() and equation.bounding_box()["width"] > 5


def test_site_page_offline_shows_explorer_snapshots_and_progress_text(site_page):
    from gradelib.site import STATIC_NOTE

    page, _ = site_page
    note = page.get_by_text(STATIC_NOTE.strip("*")).first
    assert note.is_visible()
    images = page.evaluate("() => [...document.querySelectorAll('img')].map(img => [img.complete, img.naturalWidth])")
    assert len(images) >= 2 and all(complete and width > 0 for complete, width in images), images
    assert page.get_by_text(re.compile(r"training the sorter: 100%")).count() == 1
    assert "application/vnd.jupyter.widget-view+json" not in page.content()
