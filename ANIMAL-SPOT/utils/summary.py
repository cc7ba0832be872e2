"""TensorBoard pictures: spectrogram images, confusion matrices, ROC curves."""

from typing import Sequence

import numpy as np
import torch


def colormap(name: str):
    """A matplotlib colour map (matplotlib imported here, when a picture is drawn: importing
    it costs every process that only trains or predicts a third of a second)."""
    import matplotlib

    matplotlib.use("Agg")
    return matplotlib.colormaps[name]


def spectrogram_image(spec: torch.Tensor) -> np.ndarray:
    """``(1, T, F)`` input -> uint8 RGB ``(3, F, T)``: min-max scaled, viridis, high
    frequencies on top."""
    x = spec.detach().float().cpu()[0].t().flip(0)            # (F, T), high frequencies first
    x = x - x.min()
    x = x / (x.max() + 1e-8)
    rgb = colormap("viridis")(x.numpy())[..., :3]
    return (rgb * 255).astype(np.uint8).transpose(2, 0, 1)


def confusion_image(matrix: np.ndarray, class_names: Sequence[str], numbered: bool, title: str) -> np.ndarray:
    """The confusion matrix as an RGB image ``(3, H, W)`` (uint8): rows = true class,
    columns = predicted class, colour map ``hot_r`` with a colour bar, class names on both
    axes, each cell's value printed when ``numbered`` (white on dark cells). Drawn
    directly with Pillow: matplotlib's layout made the three figures of each pass cost
    more than a small run's epoch."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(class_names)
    cell = max(22, min(48, 520 // max(n, 1)))
    font = ImageFont.load_default(size=max(9, min(13, cell // 3)))
    label = ImageFont.load_default(size=13)
    text_w = lambda t, f=font: int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(t, font=f))
    names = [str(c) for c in class_names]
    longest = max((text_w(c) for c in names), default=10)
    left, top, bottom = longest + 36, 34, longest + 34
    bar_x = left + n * cell + 18
    width, height = bar_x + 70, top + n * cell + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = float(matrix.max()) if matrix.size and matrix.max() > 0 else 1.0
    colours = (colormap("hot_r")(np.clip(matrix / peak, 0, 1))[..., :3] * 255).astype(np.uint8)
    for i in range(n):
        for j in range(n):
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=tuple(int(v) for v in colours[i, j]))
            if numbered:
                text = f"{matrix[i, j]:0.1f}"
                dark = matrix[i, j] > peak / 2
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, anchor="mm", font=font,
                          fill="white" if dark else "black")
    for k, name in enumerate(names):
        draw.text((left - 6, top + k * cell + cell / 2), name, anchor="rm", font=font, fill="black")
        tag = Image.new("RGB", (text_w(name) + 4, cell), "white")
        ImageDraw.Draw(tag).text((2, cell / 2), name, anchor="lm", font=font, fill="black")
        rotated = tag.rotate(90, expand=True)
        image.paste(rotated, (left + k * cell, top + n * cell + 6))
    draw.text((left + n * cell / 2, top / 2), title, anchor="mm", font=label, fill="black")
    draw.text((left + n * cell / 2, height - 12), "predicted class", anchor="mm", font=label, fill="black")
    side = Image.new("RGB", (n * cell, 18), "white")
    ImageDraw.Draw(side).text((n * cell / 2, 9), "true class", anchor="mm", font=label, fill="black")
    image.paste(side.rotate(90, expand=True), (2, top))
    ramp = (colormap("hot_r")(np.linspace(1, 0, n * cell))[:, :3] * 255).astype(np.uint8)
    image.paste(Image.fromarray(np.repeat(ramp[:, None, :], 14, axis=1)), (bar_x, top))
    for fraction in (0.0, 0.5, 1.0):
        y = top + (1 - fraction) * (n * cell - 1)
        draw.text((bar_x + 18, y), f"{fraction * peak:0.1f}", anchor="lm", font=font, fill="black")
    return np.asarray(image).transpose(2, 0, 1).copy()


def roc_figure(fpr, tpr, auc: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5))
    axis = figure.add_subplot()
    axis.plot(np.asarray(fpr), np.asarray(tpr), label=f"AUC: {auc}")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set_xlabel("FPR")
    axis.set_ylabel("TPR")
    axis.set_title("ROC curve")
    axis.legend(loc="lower right")
    return figure
