"""One metrics state per pass: the confusion counts (rows = true class, columns =
predicted), plus the positive-class scores of a binary run (ROC) and the per-sample
pairs (bootstrap). Every figure is derived from it: the original's binary set and
accuracy, per-class precision / recall (= per-class accuracy) / F1 / support, macro-F1,
balanced accuracy (= mean per-class accuracy), Wilson intervals for each class's recall
and a bootstrap interval for balanced accuracy, the log table and the TensorBoard scalars.

A class without samples in a pass has no recall (NaN, shown ``n/a``) and is left out of
the means; the seed fork reported 0.0 there, which reads as a failure.

Public names of the original (``Accuracy``, ``TruePositives`` ... ``F1Score``, ``Sum``,
``Max``, ``Mean``) and of the seed fork (``PerClassAccuracy``) keep their APIs.
"""

import math
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from utils.classmap import binary_count

BINARY_METRICS = ("tp", "tn", "fp", "fn", "accuracy", "f1", "precision", "TPR", "FPR")
Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def wilson_interval(successes: float, n: float, z: float = Z95) -> Tuple[float, float]:
    """95 % Wilson score interval of a proportion (NaN without samples)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def balanced_accuracy_of(matrix: np.ndarray) -> float:
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(matrix)[present] / support[present]).mean())


def confusion_of(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


class PassMetrics:
    """The counts of one pass. ``update(labels, predictions, weights=None, scores=None)``;
    ``keep_samples`` keeps (label, prediction) pairs for the bootstrap interval."""

    def __init__(self, num_classes: int, device="cpu", keep_samples: bool = False):
        self.num_classes = max(2, int(num_classes))
        self.binary = binary_count(self.num_classes)
        self.keep_samples = keep_samples
        self.reset(device)

    def reset(self, device=None):
        if device is not None:
            self.device = torch.device(device)
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64, device=self.device)
        self.scores: List[torch.Tensor] = []
        self.score_labels: List[torch.Tensor] = []
        self.samples: List[torch.Tensor] = []

    def update(self, labels: torch.Tensor, predictions: torch.Tensor, weights: Optional[torch.Tensor] = None,
               scores: Optional[torch.Tensor] = None):
        labels = labels.detach().view(-1).to(self.device, torch.long)
        predictions = predictions.detach().view(-1).to(self.device, torch.long)
        index = labels * self.num_classes + predictions
        w = None if weights is None else weights.detach().view(-1).to(self.device, torch.float64)
        counts = torch.bincount(index, weights=w, minlength=self.num_classes ** 2)
        self.confusion += counts.view(self.num_classes, self.num_classes).to(torch.float64)
        if scores is not None:
            self.scores.append(scores.detach().view(-1).float().cpu())
            self.score_labels.append(labels.cpu())
        if self.keep_samples:
            self.samples.append(torch.stack([labels, predictions]).cpu())

    def sample_state(self) -> dict:
        return {"scores": self.scores, "score_labels": self.score_labels, "samples": self.samples}

    def merge_samples(self, states: List[dict]) -> None:
        """Take the per-sample records of every process (their counts are summed apart)."""
        self.scores = [t for state in states for t in state["scores"]]
        self.score_labels = [t for state in states for t in state["score_labels"]]
        self.samples = [t for state in states for t in state["samples"]]

    # ------------------------------------------------------------------ base counts
    @property
    def matrix(self) -> np.ndarray:
        return self.confusion.cpu().numpy()

    @property
    def support(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    @property
    def total(self) -> float:
        return float(self.matrix.sum())

    def accuracy(self) -> float:
        return _ratio(float(np.trace(self.matrix)), self.total)

    # --------------------------------------------------------------- the original's
    def binary_metrics(self) -> "OrderedDict[str, float]":
        """tp, tn, fp, fn, accuracy, f1, precision, TPR, FPR (positive class = 1; a ratio
        with a zero denominator is 0, as the original)."""
        m = self.matrix
        tp, tn, fp, fn = m[1, 1], m[0, 0], m[0, 1], m[1, 0]
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        return OrderedDict(tp=float(tp), tn=float(tn), fp=float(fp), fn=float(fn), accuracy=self.accuracy(),
                           f1=_ratio(2 * precision * recall, precision + recall), precision=precision,
                           TPR=recall, FPR=_ratio(fp, fp + tn))

    def epoch_metrics(self) -> "OrderedDict[str, float]":
        """The metrics of the epoch line: the binary set, or accuracy and the seed fork's
        mean per-class accuracy."""
        if self.binary:
            return self.binary_metrics()
        return OrderedDict(accuracy=self.accuracy(), mean_per_class_acc=self.balanced_accuracy())

    # ------------------------------------------------------------------- per class
    def recall(self) -> np.ndarray:
        support = self.support
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, np.diag(self.matrix) / np.where(support > 0, support, 1), np.nan)

    def precision(self) -> np.ndarray:
        predicted = self.matrix.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(predicted > 0, np.diag(self.matrix) / np.where(predicted > 0, predicted, 1), np.nan)

    def f1(self) -> np.ndarray:
        """``2 tp / (2 tp + fp + fn)`` per class; NaN for a class never seen nor predicted."""
        m = self.matrix
        tp = np.diag(m)
        den = 2 * tp + (m.sum(axis=0) - tp) + (m.sum(axis=1) - tp)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)

    def balanced_accuracy(self) -> float:
        """Mean recall over the classes with samples (= mean per-class accuracy)."""
        return balanced_accuracy_of(self.matrix)

    def macro_f1(self) -> float:
        present = self.support > 0
        return float(np.nanmean(self.f1()[present])) if present.any() else float("nan")

    def recall_intervals(self) -> List[Tuple[float, float]]:
        return [wilson_interval(float(self.matrix[c, c]), float(s)) for c, s in enumerate(self.support)]

    def balanced_accuracy_interval(self, resamples: int = BOOTSTRAP_RESAMPLES,
                                   seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
        """95 % percentile bootstrap over the samples (one per file), fixed seed."""
        if not self.samples:
            return float("nan"), float("nan")
        return bootstrap_balanced_accuracy(torch.cat(self.samples, dim=1).numpy(), self.num_classes, resamples, seed)

    # --------------------------------------------------------------------- ROC
    def roc(self):
        """``(fpr, tpr, auc)`` from the positive-class scores; AUC is NaN when a pass
        holds only one class."""
        if not self.scores:
            return torch.zeros(1), torch.zeros(1), float("nan")
        scores, labels = torch.cat(self.scores), torch.cat(self.score_labels)
        order = torch.argsort(scores, descending=True)
        positives = (labels[order] == 1).double()
        pos, neg = float(positives.sum()), float((1 - positives).sum())
        tpr = torch.cat([torch.zeros(1, dtype=torch.double), positives.cumsum(0)]) / (pos or float("nan"))
        fpr = torch.cat([torch.zeros(1, dtype=torch.double), (1 - positives).cumsum(0)]) / (neg or float("nan"))
        auc = float(torch.trapz(tpr, fpr)) if pos and neg else float("nan")
        return fpr, tpr, auc

    def normalized_confusion(self) -> np.ndarray:
        rows = self.matrix.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, self.matrix / np.where(rows > 0, rows, 1), 0.0)

    def table(self, class_names: Sequence[str], intervals: bool = False) -> List[str]:
        return table_lines(self, class_names, intervals)

    def summary(self, class_names: Sequence[str], intervals: bool = False) -> Dict:
        return summary_of(self, class_names, intervals)


def bootstrap_balanced_accuracy(pairs: np.ndarray, num_classes: int, resamples: int = BOOTSTRAP_RESAMPLES,
                                seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
    """2.5 and 97.5 percentiles of balanced accuracy over ``resamples`` resamples (with
    replacement) of the (label, prediction) ``pairs`` (2, n)."""
    n = pairs.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        values.append(balanced_accuracy_of(confusion_of(pairs[0, pick], pairs[1, pick], num_classes)))
    values = np.asarray(values)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, np.floating) and np.isnan(value)) else f"{100 * float(value):.1f}%"


def _num(value) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value


def table_lines(m: PassMetrics, class_names: Sequence[str], intervals: bool = False) -> List[str]:
    """Per class ``K14: 83.3% [43.6-97.0] (n=6) P 71.4% F1 76.9%`` (accuracy = recall, its
    interval with ``intervals``, support, precision, F1), then the means."""
    recall, precision, f1 = m.recall(), m.precision(), m.f1()
    bounds = m.recall_intervals()
    lines = []
    for c, name in enumerate(class_names):
        n = int(round(m.support[c]))
        if n == 0:
            text = f"{name}: n/a (n=0)"
        else:
            text = f"{name}: {pct(recall[c])}"
            if intervals:
                text += f" [{bounds[c][0] * 100:.1f}-{bounds[c][1] * 100:.1f}]"
            text += f" (n={n})"
        text += f" P {pct(precision[c])} F1 {pct(f1[c])}"
        lines.append(text)
    mean = f"mean per-class accuracy: {pct(m.balanced_accuracy())}"
    if intervals:
        lo, hi = m.balanced_accuracy_interval()
        if not math.isnan(lo):
            mean += f" [{lo * 100:.1f}-{hi * 100:.1f}]"
    lines.append(mean + " (balanced accuracy)")
    lines.append(f"macro F1: {pct(m.macro_f1())}")
    return lines


def summary_of(m: PassMetrics, class_names: Sequence[str], intervals: bool = False) -> Dict:
    """A JSON-ready description (metrics.json)."""
    recall, precision, f1 = m.recall(), m.precision(), m.f1()
    bounds = m.recall_intervals()
    per_class = OrderedDict()
    for c, name in enumerate(class_names):
        entry = {"support": int(round(m.support[c])), "recall": _num(recall[c]),
                 "precision": _num(precision[c]), "f1": _num(f1[c])}
        if intervals:
            entry["recall_ci95"] = [_num(bounds[c][0]), _num(bounds[c][1])]
        per_class[name] = entry
    out = {"accuracy": m.accuracy(), "balanced_accuracy": _num(m.balanced_accuracy()),
           "macro_f1": _num(m.macro_f1()), "samples": int(round(m.total)), "per_class": per_class,
           "confusion_matrix": m.matrix.round().astype(int).tolist()}
    if intervals:
        out["balanced_accuracy_ci95"] = [_num(v) for v in m.balanced_accuracy_interval()]
    if m.binary:
        out["binary"] = dict(m.binary_metrics())
    return out


# --------------------------------------------------------------- the seed fork's API
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
        return _ratio(self.correct, self.total)


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
        return _ratio(float((values * weights).sum()), float(weights.sum()))


class Max(_Aggregate):
    def get(self) -> float:
        values, _ = self._all()
        return float(values.max()) if values.numel() else float("nan")
