"""Pictures of 8x8 digits, drawn the same way in notebooks 04, 05 and 06.

Two pixel conventions meet here. The VAE's Bernoulli pixels (04, and 05's autoencoders) are
probabilities in [0, 1]; the GAN's and the diffusion model's digits (05, 06) are scaled to [-1, 1]
(a tanh output, Gaussian noise around 0). :func:`show_digits` takes the second and draws dark ink on
white; :func:`tile_digits` only arranges, so it serves both.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import Tensor

__all__ = ["show_digits", "tile_digits", "unit_range"]


def unit_range(images: Tensor) -> Tensor:
    """Digits scaled to [-1, 1] back to pixel intensities in [0, 1]: (x + 1) / 2, clamped; any shape, on the CPU."""
    return ((images.detach().cpu() + 1) / 2).clamp(0, 1)


def tile_digits(images: Tensor, rows: int, cols: int) -> Tensor:
    """The first rows * cols digits, each (64,), (8, 8) or (1, 8, 8), as one (8 rows, 8 cols) image on the CPU.

    Digit k goes to row k // cols, column k % cols; values are left as they are.
    """
    grid = images[: rows * cols].detach().cpu().reshape(rows, cols, 8, 8)
    return grid.permute(0, 2, 1, 3).reshape(8 * rows, 8 * cols)          # (row, y, col, x) -> pixel rows, pixel cols


def show_digits(images: Tensor, axes, titles: Sequence[str] | None = None) -> None:
    """Draw digit i of ``images`` (N, 64), (N, 8, 8) or (N, 1, 8, 8), in [-1, 1], on the i-th of ``axes``.

    axes: a matplotlib Axes array (as ``plt.subplots`` returns) or a list of Axes, filled in order.
    Dark ink on white, on the fixed scale [0, 1] (so a faint sample looks faint), no ticks; titles[i]
    goes above digit i when given.
    """
    for i, ax in enumerate(np.asarray(axes).flat):
        ax.imshow(unit_range(images[i].reshape(8, 8)).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
