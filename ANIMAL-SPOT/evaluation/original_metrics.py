"""The metric classes of the original's ``utils.metrics`` (``Accuracy``, ``TruePositives``,
``FalsePositives``, ``TrueNegatives``, ``FalseNegatives``, ``Precision``, ``Recall``,
``FPR``, ``F1Score``: ``update(labels, predictions, weights=None)``, ``get()``,
``reset(device=None)``; ``Sum``, ``Mean``, ``Max``: ``update(values, weights=None)``) and the
seed fork's ``PerClassAccuracy``, with their APIs, over this project's ``PassMetrics``.
Importable as ``utils.metrics``, as in the original."""

from typing import List, Tuple

import torch

from .metrics import PassMetrics, ratio


class PerClassAccuracy(PassMetrics):
    """Accuracy (recall) of each class over a pass: the seed fork's API.

    ``PerClassAccuracy(num_classes, device)``; ``update(labels, preds, weights=None)``;
    ``get()`` -> list of per-class accuracies (a class without samples is NaN, not the
    seed's 0.0); ``reset(device=None)``; ``str()`` prints the list. Also ``compute()``
    (tensor), ``mean()`` (over classes with samples), ``counts`` and ``table(names)``."""

    def __init__(self, num_classes: int, device="cpu"):
        super().__init__(num_classes, device)

    def update(self, labels, preds, weights=None, scores=None):
        super().update(labels, preds, weights, scores)

    def get(self) -> List[float]:
        return [float(v) for v in self.recall()]

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.recall(), dtype=torch.float32)

    def mean(self) -> float:
        return self.balanced_accuracy()

    @property
    def counts(self) -> torch.Tensor:
        return torch.from_numpy(self.support)

    def __str__(self) -> str:
        return str(self.get())


# ------------------------------------------------------------------- the original's
class _BinaryCount:
    """Weighted binary counts (positive class 1), the original's metric objects."""

    def __init__(self, device=None):
        self.reset(device)

    def reset(self, device=None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.counts = PassMetrics(2, self.device)

    def update(self, labels, predictions, weights=None):
        self.counts.update(labels, predictions, weights)

    def get(self) -> float:
        return float(self.counts.binary_metrics()[self.key])


class Accuracy(_BinaryCount):
    """Fraction of predictions equal to the labels (any number of classes)."""

    def reset(self, device=None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.correct = self.total = 0.0

    def update(self, labels, predictions, weights=None):
        labels, predictions = labels.detach().view(-1), predictions.detach().view(-1)
        w = torch.ones_like(labels, dtype=torch.float64) if weights is None else weights.detach().view(-1).double()
        self.correct += float((w * (labels == predictions).double()).sum())
        self.total += float(w.sum())

    def get(self) -> float:
        return ratio(self.correct, self.total)


class TruePositives(_BinaryCount):
    key = "tp"


class FalsePositives(_BinaryCount):
    key = "fp"


class TrueNegatives(_BinaryCount):
    key = "tn"


class FalseNegatives(_BinaryCount):
    key = "fn"


class Precision(_BinaryCount):
    key = "precision"


class Recall(_BinaryCount):
    key = "TPR"


class FPR(_BinaryCount):
    key = "FPR"


class F1Score(_BinaryCount):
    key = "f1"


class _Aggregate:
    def __init__(self, device=None):
        self.reset(device)

    def reset(self, device=None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.values: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, values, weights=None):
        values = torch.as_tensor(values).detach().double().view(-1).cpu()
        weights = torch.ones_like(values) if weights is None else torch.as_tensor(weights).double().view(-1).cpu()
        self.values.append((values, weights))

    def _all(self):
        if not self.values:
            return torch.zeros(0, dtype=torch.double), torch.zeros(0, dtype=torch.double)
        return torch.cat([v for v, _ in self.values]), torch.cat([w for _, w in self.values])


class Sum(_Aggregate):
    def get(self) -> float:
        values, weights = self._all()
        return float((values * weights).sum())


class Mean(_Aggregate):
    def get(self) -> float:
        values, weights = self._all()
        return ratio(float((values * weights).sum()), float(weights.sum()))


class Max(_Aggregate):
    def get(self) -> float:
        values, _ = self._all()
        return float(values.max()) if values.numel() else float("nan")
