"""Interactive explorers shared by the notebooks (ipywidgets + matplotlib)."""

from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch


def plot_attention(weights: torch.Tensor, query_labels: Sequence[str], key_labels: Sequence[str], ax=None, title: str = ""):
    """Heatmap of one head's attention weights.

    weights: (T_q, T_k); row i shows how query i spreads its attention over the keys.
    """
    ax = ax or plt.gca()
    image = ax.imshow(weights.detach().float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(key_labels)), labels=list(key_labels), fontsize=8)
    ax.set_yticks(range(len(query_labels)), labels=list(query_labels), fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    return image


class AttentionExplorer:
    """Pick an example, a layer and a head; see that head's attention heatmap.

    attention_for(i) returns the attention maps of example ``i``: one tensor per layer, each
    (num_heads, T_q, T_k). token_labels[i] labels example i's tokens (keys and, by default, queries).
    """

    def __init__(self, attention_for: Callable[[int], list[torch.Tensor]], token_labels: Sequence[Sequence[str]],
                 example_names: Sequence[str] | None = None, query_labels: Sequence[Sequence[str]] | None = None):
        import ipywidgets as widgets

        self.attention_for = attention_for
        self.token_labels = token_labels
        self.query_labels = query_labels or token_labels
        names = example_names or [" ".join(labels) for labels in token_labels]
        first = attention_for(0)
        self.example = widgets.Dropdown(options=[(name, i) for i, name in enumerate(names)], value=0, description="example")
        self.layer = widgets.IntSlider(min=0, max=len(first) - 1, value=len(first) - 1, description="layer")
        self.head = widgets.IntSlider(min=0, max=first[0].shape[0] - 1, value=0, description="head")
        self.output = widgets.Output()
        for control in (self.example, self.layer, self.head):
            control.observe(lambda change: self.draw(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.example, self.layer, self.head]), self.output])
        self.draw()

    def draw(self) -> None:
        maps = self.attention_for(self.example.value)
        weights = maps[self.layer.value][self.head.value]
        with self.output:
            self.output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 4.2))
            plot_attention(weights, self.query_labels[self.example.value], self.token_labels[self.example.value], ax,
                           title=f"layer {self.layer.value}, head {self.head.value}")
            plt.show()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
