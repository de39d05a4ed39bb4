"""The shared training loop, schedule and timer: what every notebook's trainer is built on."""

import math
import time

import pytest
import torch
from torch import nn

import gradelib
from gradelib.training import count_parameters, fit, update, warmup_cosine


def _regression(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    return x, y


def _step_for(model, x, y):
    def step(index, generator):
        i = torch.randint(0, len(x), (32,), generator=generator)
        return (model(x[i]).squeeze(-1) - y[i]).pow(2).mean()
    return step


def test_fit_trains_and_records_one_loss_per_step():
    x, y = _regression()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    history = fit(_step_for(model, x, y), 300, optimizer=torch.optim.Adam(model.parameters(), 0.05), modules=[model])
    assert list(history) == ["loss"] and len(history["loss"]) == 300
    assert history["loss"][-1] < 0.01 * history["loss"][0]
    assert not model.training  # back in eval mode


def test_fit_is_reproducible_from_the_seed_alone():
    x, y = _regression()
    runs = []
    for global_seed in (1, 2):  # the global RNG must not matter
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        torch.manual_seed(global_seed)
        runs.append(fit(_step_for(model, x, y), 20, optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=7)["loss"])
    assert runs[0] == runs[1]
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    assert fit(_step_for(model, x, y), 20, optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=8)["loss"] != runs[0]


def test_fit_records_every_figure_a_self_updating_step_reports():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), 0.1)

    def step(index, generator):
        loss = model(torch.randn(4, 2, generator=generator)).pow(2).mean()
        update(optimizer, loss)
        return {"loss": loss, "index": index}

    history = fit(step, 5)
    assert history["index"] == [0, 1, 2, 3, 4] and len(history["loss"]) == 5


def test_fit_asks_for_the_loss_when_it_updates():
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="loss"):
        fit(lambda i, g: {"d_loss": model(torch.ones(1, 2)).sum()}, 1, optimizer=torch.optim.SGD(model.parameters(), 0.1))
    with pytest.raises(ValueError, match="optimizer"):
        fit(lambda i, g: 0.0, 1, schedule=warmup_cosine())


def test_clip_grad_norm_bounds_the_update():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(lambda i, g: 1000.0 * model(torch.ones(1, 1)).sum(), 1, optimizer=optimizer, clip_grad_norm=0.5)
    assert model.weight.item() == pytest.approx(-0.5)


def test_schedule_sets_the_learning_rate_before_each_step():
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    seen = []

    def step(index, generator):
        seen.append(optimizer.param_groups[0]["lr"])
        return model(torch.ones(1, 1)).sum()

    fit(step, 10, optimizer=optimizer, schedule=warmup_cosine(warmup=0.2, final=0.1))
    factor = warmup_cosine(warmup=0.2, final=0.1)
    assert seen == pytest.approx([2.0 * factor(i / 10) for i in range(10)])
    assert seen[0] < seen[1] < seen[2] and max(seen) == pytest.approx(2.0) and seen[-1] < seen[3]


def test_warmup_cosine_shape():
    factor = warmup_cosine(warmup=0.1, final=0.2)
    assert factor(0.0) == pytest.approx(1e-3 / 0.1)
    assert factor(0.05) == pytest.approx(0.051 / 0.1)
    assert factor(0.1) == pytest.approx(1.0)
    assert factor(0.55) == pytest.approx(0.2 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.8)
    assert factor(1.0) == pytest.approx(0.2)
    assert warmup_cosine(warmup=0.0)(0.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        warmup_cosine(warmup=1.0)


def test_count_parameters_counts_a_tied_weight_once():
    embedding = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    model = nn.ModuleList([embedding, head])
    assert count_parameters(model) == 40
    embedding.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 0


def test_median_seconds_measures_the_call_and_keeps_its_result():
    outputs = []
    seconds = gradelib.median_seconds(lambda: outputs.append(time.sleep(0.02) or "done"))
    assert 0.015 < seconds < 0.2
    assert outputs and outputs[-1] == "done"
    busy = gradelib.median_seconds(lambda: sum(range(20_000)), process_time=True, min_run_time=0.05)
    idle = gradelib.median_seconds(lambda: time.sleep(0.02), process_time=True)
    assert idle < 0.01 and busy > 0  # CPU time does not count sleeping
