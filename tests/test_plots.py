"""The digit pictures shared by notebooks 04, 05 and 06."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gradelib.plots import show_digits, tile_digits, unit_range  # noqa: E402


def test_tile_digits_puts_digit_k_at_row_k_div_cols_and_column_k_mod_cols():
    digits = torch.arange(6 * 64, dtype=torch.float32).reshape(6, 1, 8, 8)   # every pixel different
    grid = tile_digits(digits, rows=2, cols=3)
    assert grid.shape == (16, 24)
    for k in range(6):
        row, col = divmod(k, 3)
        assert torch.equal(grid[8 * row: 8 * row + 8, 8 * col: 8 * col + 8], digits[k, 0])
    assert torch.equal(tile_digits(digits.reshape(6, 64), 1, 4), torch.cat(list(digits[:4, 0]), dim=1))   # flat digits, a row


def test_show_digits_draws_each_digit_in_unit_range_with_its_title():
    images = torch.linspace(-1.5, 1.5, 4 * 64).reshape(4, 64)
    fig, axes = plt.subplots(2, 2)
    show_digits(images, axes, titles=["a", "b", "c", "d"])
    for i, ax in enumerate(axes.flat):
        drawn = torch.as_tensor(ax.images[0].get_array())
        assert torch.equal(drawn, unit_range(images[i].reshape(8, 8)))
        assert ax.images[0].get_clim() == (0, 1) and ax.get_title() == "abcd"[i] and list(ax.get_xticks()) == []
    assert float(unit_range(images).min()) == 0.0 and float(unit_range(images).max()) == 1.0   # clamped, not rescaled
    show_digits(images[:2], [axes[0, 0], axes[1, 1]])                                         # a plain list of Axes
    plt.close(fig)
