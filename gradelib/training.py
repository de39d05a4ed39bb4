"""The one training loop of the course, its learning-rate schedule and its progress bar.

Every notebook trains something, and every reference trainer (``train_vae``, ``train_gan``,
``train_clip``, the latent-diffusion stages, notebook 06's ε-model) is this loop with its own step::

    def step(index: int, generator: torch.Generator) -> Tensor:
        batch = data[torch.randint(0, len(data), (64,), generator=generator)]
        return loss_fn(model, batch)                    # a scalar; fit() does the update

    history = fit(step, steps=1_000, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                  modules=[model], label="VAE", progress=True, schedule=warmup_cosine(warmup=0.05))
    history["loss"]                                     # one float per step

* **Randomness** comes from one seed: ``fit`` makes a CPU ``torch.Generator`` from ``seed`` and hands it
  to every step, so a run is the same on a laptop, in CI and on a GPU, whatever else used the global RNG.
* **Progress** is a labelled tqdm bar, ``tqdm(disable=not progress)``.
* **Updates**: with ``optimizer=``, a step returns its loss (or a dict with a ``"loss"`` entry and other
  figures to record) and ``fit`` zeroes, back-propagates, clips (``clip_grad_norm=``) and steps. A step
  that updates several optimizers itself (a GAN's discriminator then generator) calls :func:`update`
  for each and returns the figures to record; then leave ``optimizer`` out.
* **Schedule**: ``schedule`` maps the fraction of training done, in [0, 1), to a factor on each
  parameter group's initial learning rate; :func:`warmup_cosine` is the course's one schedule.

Loops that are themselves the lesson (the first training loop of notebook 01, a GAN's alternating
updates written out once) stay in the notebooks; everything after reuses this one.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["count_parameters", "fit", "progress_bar", "update", "warmup_cosine"]

T = TypeVar("T")
StepResult = Tensor | float | Mapping[str, Tensor | float]


def progress_bar(iterable: Iterable[T], progress: bool, label: str, *, leave: bool = True, total: int | None = None) -> Iterable[T]:
    """``iterable`` under a tqdm bar labelled ``label``, hidden when ``progress`` is False."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=label, leave=leave, total=total, disable=not progress)


def warmup_cosine(*, warmup: float = 0.05, final: float = 0.0) -> Callable[[float], float]:
    """Linear warm-up over the first ``warmup`` of training, then a cosine from 1 down to ``final``.

    Returns ``factor(progress)`` for progress in [0, 1] (the fraction of the steps, or of the seconds,
    used so far): the learning rate is ``factor * peak``. The warm-up starts at (1e-3 / warmup) of the
    peak rather than 0, so the first step moves the weights. ``warmup=0`` is a plain cosine decay.
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup is a fraction of training in [0, 1), got {warmup}")

    def factor(progress: float) -> float:
        if progress < warmup:
            return (progress + 1e-3) / warmup
        decay = min(1.0, (progress - warmup) / (1.0 - warmup))
        return final + 0.5 * (1.0 + math.cos(math.pi * decay)) * (1.0 - final)

    return factor


def update(optimizer: torch.optim.Optimizer, loss: Tensor, *, clip_grad_norm: float | None = None) -> None:
    """One optimizer step on ``loss``: zero the gradients, back-propagate, optionally clip, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm is not None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
    optimizer.step()


def fit(step: Callable[[int, torch.Generator], StepResult], steps: int, *,
        optimizer: torch.optim.Optimizer | None = None, seed: int = 0, label: str = "training", progress: bool = False,
        clip_grad_norm: float | None = None, schedule: Callable[[float], float] | None = None,
        modules: Iterable[nn.Module] = ()) -> dict[str, list[float]]:
    """Run ``step(index, generator)`` ``steps`` times and return what it reported, as lists of floats.

    step:       returns the loss (a scalar tensor), or a mapping of named figures. With ``optimizer``
                the loss (the tensor itself, or the mapping's ``"loss"``) is back-propagated here.
    optimizer:  updated after every step (see :func:`update`); leave it out when the step updates itself.
    seed:       seeds the CPU generator handed to every step, the loop's only source of randomness.
    label, progress: the tqdm bar's label, and whether to show it.
    clip_grad_norm: clip the optimizer's parameters to this global gradient norm before each update.
    schedule:   factor(progress) on the initial learning rate of every parameter group (needs optimizer).
    modules:    put in train() mode for the loop and back in eval() mode after it.

    Returns {name: [value per step]}: "loss" for a plain loss, the mapping's keys otherwise.
    """
    if schedule is not None and optimizer is None:
        raise ValueError("a schedule needs the optimizer whose learning rate it sets")
    modules = list(modules)
    generator = torch.Generator().manual_seed(seed)
    peaks = [group["lr"] for group in optimizer.param_groups] if optimizer is not None else []
    history: dict[str, list[float]] = {}
    for module in modules:
        module.train()
    try:
        for index in progress_bar(range(steps), progress, label):
            if schedule is not None:
                for group, peak in zip(optimizer.param_groups, peaks):
                    group["lr"] = peak * schedule(index / steps)
            result = step(index, generator)
            figures = dict(result) if isinstance(result, Mapping) else {"loss": result}
            if optimizer is not None:
                if "loss" not in figures:
                    raise ValueError(f"with an optimizer the step must return its loss; it returned {sorted(figures)}")
                update(optimizer, figures["loss"], clip_grad_norm=clip_grad_norm)
            for name, value in figures.items():
                history.setdefault(name, []).append(value.item() if isinstance(value, Tensor) else float(value))
    finally:
        for module in modules:
            module.eval()
    return history


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (a tied weight counts once, as ``module.parameters()`` yields it once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
