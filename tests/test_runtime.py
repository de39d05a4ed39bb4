import random

import numpy as np
import pytest
import torch

import gradelib


def test_device_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gradelib.device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gradelib.device() == torch.device("cuda")


def test_seed_everything_makes_all_three_generators_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    gradelib.seed_everything(3)
    first = draw()
    gradelib.seed_everything(3)
    assert draw() == first
    gradelib.seed_everything(4)
    assert draw() != first


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "default"), ({"NBGRADER_EXECUTION": "autograde"}, "quick"), ({"GRADELIB_PROFILE": "full"}, "full"),
     ({"GRADELIB_PROFILE": "default", "NBGRADER_EXECUTION": "autograde"}, "default")],
)
def test_active_profile(monkeypatch, env, expected):
    monkeypatch.delenv("GRADELIB_PROFILE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert gradelib.active_profile() == expected


def test_unknown_profile_is_an_error(monkeypatch):
    monkeypatch.setenv("GRADELIB_PROFILE", "turbo")
    with pytest.raises(ValueError, match="turbo"):
        gradelib.active_profile()


def test_budget_picks_the_active_profile(monkeypatch):
    monkeypatch.setenv("GRADELIB_PROFILE", "quick")
    budget = gradelib.budget(quick=dict(steps=10), default=dict(steps=100), full=dict(steps=1000))
    assert budget.steps == 10 and budget.profile == "quick" and dict(budget) == {"steps": 10}
    with pytest.raises(AttributeError, match="steps"):
        budget.epochs


def test_budget_profiles_must_share_fields():
    with pytest.raises(ValueError, match="same fields"):
        gradelib.budget(quick=dict(steps=1), default=dict(steps=1, lr=0.1), full=dict(steps=1))


def test_gradelib_device_can_pin_the_cpu_and_insists_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("GRADELIB_DEVICE", "cpu")
    assert gradelib.device() == torch.device("cpu")
    monkeypatch.setenv("GRADELIB_DEVICE", "cuda")
    assert gradelib.device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        gradelib.device()
    monkeypatch.setenv("GRADELIB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="not 'cpu' or 'cuda'"):
        gradelib.device()
