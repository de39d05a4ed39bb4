# Two commands set up everything, on a fresh machine and again later (both are idempotent):
#   make lab   - install the course into .venv and open it in JupyterLab
#   make test  - install the dev extras and run the whole test suite (unit tests, drift check,
#                grading round trip, and nbval over every solution notebook)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch. A bare `torch` requirement would pull several GB of CUDA wheels.
TORCH_PIN := torch==2.13.0
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: lab test bench release clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.course-installed: pyproject.toml | $(PY)
	$(PIP) $(TORCH_PIN)
	$(PIP) -e ".[course]"
	touch $@

$(VENV)/.dev-installed: $(VENV)/.course-installed pyproject.toml
	$(PIP) -e ".[dev]"
	touch $@

lab: $(VENV)/.course-installed
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/course

# nbval and the autograder run the notebooks in the `quick` profile; `python -m gradelib.bench`
# measures the `default` one.
test: $(VENV)/.dev-installed
	GRADELIB_PROFILE=quick MPLBACKEND=Agg $(PY) -m pytest

bench: $(VENV)/.course-installed
	$(PY) -m gradelib.bench

release: $(VENV)/.course-installed
	$(VENV)/bin/gradelib release --all

clean:
	rm -rf $(VENV) gradebook.db .nbgrader.log
