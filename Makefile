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

.PHONY: lab test bench release site notebooks clean

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
	GRADELIB_PROFILE=quick MPLBACKEND=Agg $(PY) -m pytest --durations=25

bench: $(VENV)/.course-installed
	$(PY) -m gradelib.bench

# The static course site, built offline into _site/_build/html and read offline from file:// (no
# script, KaTeX's stylesheet and fonts bundled from site/katex). Jupyter Book 2 runs on Node.js >= 18
# (Debian: apt-get install nodejs).
site: $(VENV)/.dev-installed
	$(VENV)/bin/gradelib site --out _site

# Every solution notebook under nbval, then the benchmark, on one device:
#   make notebooks DEVICE=cuda              a GPU machine, `full` profile, writes reports/bench-cuda.json
#   make notebooks DEVICE=cpu PROFILE=quick
DEVICE ?= cpu
PROFILE ?= $(if $(filter cuda,$(DEVICE)),full,default)
notebooks: $(VENV)/.dev-installed
	GRADELIB_DEVICE=$(DEVICE) GRADELIB_PROFILE=$(PROFILE) MPLBACKEND=Agg $(PY) -m pytest solutions
	GRADELIB_DEVICE=$(DEVICE) $(PY) -m gradelib.bench --profile $(PROFILE)

release: $(VENV)/.course-installed
	$(VENV)/bin/gradelib release --all

clean:
	rm -rf $(VENV) _site gradebook.db .nbgrader.log
