"""A self-learner on Colab: a clean environment holding only what Colab preinstalls that the course relies on
(torch, numpy, matplotlib, ipywidgets, and the Jupyter kernel), plus gradelib installed by the notebook's own
set-up cell, exactly as it runs on Colab, from the wheel built here instead of from GitHub.

Colab is simulated by an importable ``google.colab`` loaded at kernel start-up, which is all the set-up cell
looks at. The student notebook's cells before its graded exercises must run (set-up twice: it must be safe to
rerun), and every solution notebook must run top to bottom in the quick profile.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, assignment_names

from gradelib import _colab
from gradelib._notebooks import environment

# What Colab ships and the course uses. The CPU build of torch, pinned as everywhere here (Colab's own is newer).
COLAB_PREINSTALLED = ["torch==2.13.0", "numpy", "matplotlib", "ipywidgets", "ipykernel"]


def run(*command, **kwargs):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A venv with Colab's preinstalled packages, a kernel spec for it, and a fake google.colab at kernel start."""
    home = tmp_path_factory.mktemp("colab")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", home / "wheel", ROOT)
    (wheel,) = (home / "wheel").glob("gradelib-*.whl")
    run(sys.executable, "-m", "venv", home / "venv")
    python = home / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *COLAB_PREINSTALLED)

    fake = home / "fake_colab" / "google" / "colab"  # `google` stays a namespace package, as on Colab
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Stands in for Colab\'s own module: its presence is what the set-up cell checks."""\n')
    startup = home / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(f"import sys\nsys.path.append({str(fake.parent.parent)!r})\nimport google.colab\n")
    kernel = home / "jupyter" / "kernels" / "colab"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                                    "display_name": "Colab (simulated)", "language": "python"}))
    env = {"JUPYTER_PATH": str(home / "jupyter"), "IPYTHONDIR": str(home / "ipython"), "GRADELIB_PROFILE": "quick",
           "PYTHONPATH": None, "VIRTUAL_ENV": None, "MPLBACKEND": None}
    return {"python": python, "wheel": wheel, "env": env}


def with_local_wheel(source: str, wheel: Path) -> str:
    """The set-up cell, installing from the wheel built here instead of GitHub; nothing else changes."""
    repository = _colab.repository_url(ROOT)
    assert source == _colab.setup_cell_source(repository)
    return source.replace(f"git+{repository}", wheel.as_uri())


def _an_unanswered_item(cell, error) -> bool:
    """An error a student sees before answering: the answer cell's NotImplementedError, or the check below it
    saying "no answer yet"."""
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("solution") and error.ename == "NotImplementedError":
        return True
    printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    return bool(meta.get("grade")) and "no answer yet" in error.evalue + printed


def execute(nb, colab, cwd: Path, answered: bool = True):
    """Run ``nb``; with ``answered=False`` (a student version), the only errors allowed are those of items the
    student has not answered yet, and every other cell must still run."""
    from nbclient import NotebookClient

    with environment(**colab["env"]):
        NotebookClient(nb, timeout=900, kernel_name="colab", allow_errors=not answered,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error" and (answered or not _an_unanswered_item(c, o))]
    assert not errors, f"cell {errors[0][0]}: {errors[0][1].ename}: {errors[0][1].evalue}"
    return nb


def test_student_notebook_installs_gradelib_like_colab_and_runs_up_to_the_exercises(colab, tmp_path):
    student = nbformat.read(ROOT / "course" / "01_attention" / "01_attention.ipynb", as_version=4)
    assert "Open In Colab" in student.cells[0].source
    first_exercise = next(i for i, c in enumerate(student.cells) if c.cell_type == "markdown"
                          and re.match(r"## \d+\. Graded exercises", c.source))
    cells = student.cells[:first_exercise]
    setup = nbformat.v4.new_code_cell(with_local_wheel(cells[1].source, colab["wheel"]))
    rerun = nbformat.v4.new_code_cell(setup.source + '\nimport gradelib; print("gradelib", gradelib.__version__, "from", gradelib.__file__)')
    student.cells = [cells[0], setup, rerun, *cells[2:]]
    in_clean_folder = {"cwd": tmp_path}  # not the repository, whose gradelib/ folder Python would find first
    assert run(colab["python"], "-c", "import importlib.util; print(importlib.util.find_spec('gradelib'))",
               **in_clean_folder).stdout.strip() == "None"

    executed = execute(student, colab, tmp_path, answered=False)  # the theory's derivations and predictions are blank
    assert "site-packages" in executed.cells[2].outputs[-1].text, "gradelib should come from the installed wheel"
    torch_after = run(colab["python"], "-c", "import torch; print(torch.__version__)", **in_clean_folder).stdout.strip()
    assert torch_after == "2.13.0+cpu", "installing gradelib must leave the preinstalled torch alone"


def run_solution(name: str, colab, folder: Path, threads: int) -> str | None:
    """Run solution ``name`` in the Colab kernel, in a copy of its folder under ``folder``; None, or what went wrong."""
    nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    nb.cells[1].source = with_local_wheel(nb.cells[1].source, colab["wheel"])
    shutil.copytree(ROOT / "solutions" / name, folder / name)
    colab = colab | {"env": colab["env"] | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}}
    try:
        execute(nb, colab, folder / name)
    except Exception as error:  # the message, not the exception: an nbclient error need not survive pickling
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture(scope="module")
def solution_runs(colab, request, tmp_path_factory):
    """name -> the future of its run: the selected solutions run two at a time, each in a process of its own and
    its kernel on one core's share (a whole notebook per process, so the tests stay one per notebook)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", "") == "test_solution_runs_with_only_colabs_packages_and_the_wheel"]
    workers = 2
    threads = max(1, (multiprocessing.cpu_count() or 1) // workers)
    folder = tmp_path_factory.mktemp("colab-solutions")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Later notebooks are the longer ones: started first, they do not leave one running alone at the end.
        yield {name: pool.submit(run_solution, name, colab, folder, threads) for name in reversed(names)}


@pytest.mark.parametrize("name", assignment_names())
def test_solution_runs_with_only_colabs_packages_and_the_wheel(solution_runs, name):
    problem = solution_runs[name].result()
    assert problem is None, problem
