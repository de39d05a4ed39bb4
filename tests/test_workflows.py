"""The GitHub workflows run what the README and Makefile promise: the CPU job is `.ci/run`, the GPU job runs
every notebook and the benchmark on CUDA on a self-hosted `gpu` runner."""

import yaml
from conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def steps(workflow: str, job: str) -> list[str]:
    jobs = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    return [step.get("run", "") for step in jobs[job]["steps"]]


def test_cpu_job_is_the_ci_script():
    assert "bash .ci/run" in steps("ci.yml", "cpu")


def test_gpu_job_runs_the_notebooks_on_cuda_on_a_gpu_runner():
    job = yaml.safe_load((WORKFLOWS / "gpu.yml").read_text())["jobs"]["notebooks"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert "make notebooks DEVICE=cuda" in steps("gpu.yml", "notebooks")
    makefile = (ROOT / "Makefile").read_text()
    assert "GRADELIB_DEVICE=$(DEVICE)" in makefile and "gradelib.bench" in makefile
