"""TensorBoard pictures: spectrogram images, confusion matrices, ROC curves."""

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def spectrogram_image(spec: torch.Tensor) -> np.ndarray:
    """``(1, T, F)`` input -> uint8 RGB ``(3, F, T)``: min-max scaled, viridis, high
    frequencies on top."""
    x = spec.detach().float().cpu()[0].t().flip(0)            # (F, T), high frequencies first
    x = x - x.min()
    x = x / (x.max() + 1e-8)
    rgb = matplotlib.colormaps["viridis"](x.numpy())[..., :3]
    return (rgb * 255).astype(np.uint8).transpose(2, 0, 1)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], numbered: bool, title: str):
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, interpolation="nearest", cmap="hot_r")
    figure.colorbar(image, ax=axis)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, labels=list(class_names), rotation=90)
    axis.set_yticks(ticks, labels=list(class_names))
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    if numbered:
        light = matrix.max() / 2 if matrix.size else 0   # white digits on the dark cells
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                axis.text(j, i, f"{matrix[i, j]:0.1f}", ha="center", va="center", fontsize=7,
                          color="white" if matrix[i, j] > light else "black")
    figure.tight_layout()
    return figure


def roc_figure(fpr, tpr, auc: float):
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(np.asarray(fpr), np.asarray(tpr), label=f"AUC: {auc}")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set_xlabel("FPR")
    axis.set_ylabel("TPR")
    axis.set_title("ROC curve")
    axis.legend(loc="lower right")
    return figure
