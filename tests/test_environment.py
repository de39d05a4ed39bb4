"""pyproject.toml and environment.yml must not drift apart: conda users get what pip users get."""

import re
import tomllib

import yaml
from conftest import ROOT

# conda-forge names that differ from PyPI's
CONDA_NAMES = {"pytorch-cpu": "torch"}


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_lists_every_dependency_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_names = {requirement_name(s) for s in project["dependencies"] + extras["course"] + extras["dev"]} - {"gradelib"}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_specs = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip_specs = [s for d in environment["dependencies"] if isinstance(d, dict) for s in d.get("pip", [])
                 if not s.startswith("-")]  # what conda-forge lacks, installed by pip in the same environment
    conda_names = {CONDA_NAMES.get(requirement_name(s), requirement_name(s)) for s in conda_specs + pip_specs}
    # Node.js is no Python package: pip users install it from their system (Jupyter Book 2 runs on it).
    conda_names -= {"python", "pip", "nodejs"}
    assert conda_names == pip_names


def test_torch_keeps_a_lower_bound_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch_spec,) = [s for s in project["dependencies"] if requirement_name(s) == "torch"]
    assert torch_spec == "torch>=2.2"
