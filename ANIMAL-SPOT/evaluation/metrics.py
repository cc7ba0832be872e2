"""Every figure the project reports about a pass, defined once.

``PassMetrics`` is the state of one pass: the confusion counts (rows = true class,
columns = predicted), the positive-class scores of a binary run (ROC) and the
per-sample pairs (bootstrap). ``METRICS`` is the one named collection of figures
computed from it: accuracy, the original's binary set, per-class recall (= per-class
accuracy) / precision / F1 / support, balanced accuracy (= mean per-class accuracy),
macro-F1, ROC AUC. The epoch log line, the per-class table, the TensorBoard scalars,
``metrics.json`` and ``--monitor`` are all generated from it: adding a figure is one
``Metric`` entry.

A class without samples in a pass has no recall (NaN, shown ``n/a``) and is left out of
the means; the seed fork reported 0.0 there, which reads as a failure.

The public names of the original's ``utils.metrics`` (``Accuracy``, ``TruePositives`` ...
``F1Score``, ``Sum``, ``Max``, ``Mean``) and of the seed fork (``PerClassAccuracy``) live in
``evaluation.original_metrics``, importable as ``utils.metrics``.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import intervals
from ..utils.classmap import binary_count

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def wilson_interval(successes: float, n: float) -> Tuple[float, float]:
    """95 % Wilson score interval of a proportion (NaN without samples)."""
    return intervals.wilson(successes, n)


def balanced_accuracy_of(matrix: np.ndarray) -> float:
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(matrix)[present] / support[present]).mean())


def roc_auc_of(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a positive scores above a negative (ties
    count half; the Mann-Whitney statistic over average ranks). NaN without both kinds."""
    from scipy.stats import rankdata            # here: importing scipy.stats costs every process a second

    positive = np.asarray(positive, bool)
    pos, neg = int(positive.sum()), int((~positive).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def macro_roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest ROC AUC of each class present in ``labels`` (column c of
    ``probabilities`` against the rest), averaged; NaN with fewer than two classes."""
    labels = np.asarray(labels)
    present = [c for c in range(probabilities.shape[1]) if (labels == c).any()]
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_of(probabilities[:, c], labels == c) for c in present]))


def confusion_of(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


class PassMetrics:
    """The counts of one pass. ``update(labels, predictions, weights=None, scores=None)``;
    ``keep_samples`` keeps (label, prediction) pairs for the bootstrap interval. Figures
    by name: ``figure("macro_f1")``."""

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

    @classmethod
    def from_confusion(cls, matrix: np.ndarray, keep_samples: bool = False) -> "PassMetrics":
        """The figures of a confusion matrix of counts (pooled folds); ``keep_samples``
        rebuilds the (label, prediction) pairs it counts, for the bootstrap."""
        matrix = np.asarray(matrix)
        m = cls(len(matrix), keep_samples=keep_samples)
        m.confusion = torch.as_tensor(matrix, dtype=torch.float64)
        if keep_samples:
            labels, preds = np.nonzero(matrix)
            counts = matrix[labels, preds].round().astype(int)
            m.samples = [torch.from_numpy(np.stack([np.repeat(labels, counts), np.repeat(preds, counts)]))]
        return m

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
        return ratio(float(np.trace(self.matrix)), self.total)

    def binary_metrics(self) -> "OrderedDict[str, float]":
        """tp, tn, fp, fn, accuracy, f1, precision, TPR, FPR (positive class = 1; a ratio
        with a zero denominator is 0, as the original)."""
        m = self.matrix
        tp, tn, fp, fn = m[1, 1], m[0, 0], m[0, 1], m[1, 0]
        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        return OrderedDict(tp=float(tp), tn=float(tn), fp=float(fp), fn=float(fn), accuracy=self.accuracy(),
                           f1=ratio(2 * precision * recall, precision + recall), precision=precision,
                           TPR=recall, FPR=ratio(fp, fp + tn))

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

    def balanced_accuracy_interval(self, draws: int = BOOTSTRAP_RESAMPLES * 4,
                                   seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
        """95 % interval from the per-class recalls' Jeffreys posteriors (``intervals.mean_of_proportions``):
        it holds the estimate and does not collapse at perfect scores."""
        return intervals.mean_of_proportions(np.diag(self.matrix), self.support, draws, seed)

    def roc(self):
        """``(fpr, tpr, auc)`` from the positive-class scores (``roc_of``)."""
        return roc_of(self.scores, self.score_labels)

    def normalized_confusion(self) -> np.ndarray:
        rows = self.matrix.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, self.matrix / np.where(rows > 0, rows, 1), 0.0)

    # ------------------------------------------------------------------ by name
    def figure(self, name: str):
        return METRICS[name].compute(self)

    def table(self, class_names: Sequence[str], intervals: bool = False) -> List[str]:
        return table_lines(self, class_names, intervals)

    def summary(self, class_names: Sequence[str], intervals: bool = False) -> Dict:
        return summary_of(self, class_names, intervals)


def roc_of(scores: List[torch.Tensor], labels: List[torch.Tensor]):
    """``(fpr, tpr, auc)`` of a binary pass's positive-class scores; AUC is NaN when the
    pass holds only one class."""
    if not scores:
        return torch.zeros(1), torch.zeros(1), float("nan")
    scores, labels = torch.cat(scores), torch.cat(labels)
    order = torch.argsort(scores, descending=True)
    positives = (labels[order] == 1).double()
    pos, neg = float(positives.sum()), float((1 - positives).sum())
    tpr = torch.cat([torch.zeros(1, dtype=torch.double), positives.cumsum(0)]) / (pos or float("nan"))
    fpr = torch.cat([torch.zeros(1, dtype=torch.double), (1 - positives).cumsum(0)]) / (neg or float("nan"))
    auc = float(torch.trapz(tpr, fpr)) if pos and neg else float("nan")
    return fpr, tpr, auc


# ------------------------------------------------------------------ the collection
@dataclass(frozen=True)
class Metric:
    """One figure of a pass.

    ``compute(metrics)`` gives a number, or one number per class (``per_class``);
    ``interval(metrics)`` its 95 % interval (``<name>_ci95`` in metrics.json; per class a
    list of pairs). ``passes``: where the log line and TensorBoard show it (``all``,
    ``binary`` or ``multi``); ``line``: its token on the epoch line; ``board``:
    TensorBoard tags (``<phase>/<tag>``, per class ``<phase>/<tag>/<CLASS>``); ``table``:
    its label in the per-class table; ``group``: a sub-dictionary of metrics.json
    (``binary``); ``monitor``: whether ``--monitor`` may choose it, and ``mode`` which
    way is better."""

    name: str
    compute: Callable[[PassMetrics], object]
    per_class: bool = False
    interval: Optional[Callable[[PassMetrics], object]] = None
    passes: str = "all"
    line: Optional[str] = None
    board: Tuple[str, ...] = ()
    table: Optional[str] = None
    group: Optional[str] = None
    monitor: bool = False
    mode: str = "max"
    key: Optional[str] = None          # its key in metrics.json (default: name)

    def shown(self, m: PassMetrics) -> bool:
        return self.passes == "all" or (self.passes == "binary") == m.binary


def _binary(key: str) -> Callable[[PassMetrics], float]:
    return lambda m: m.binary_metrics()[key]


class Collection:
    """The metrics in order; generates the log line, the per-class table, the TensorBoard
    scalars and the JSON summary."""

    def __init__(self, metrics: Sequence[Metric]):
        self.metrics = list(metrics)
        self.by_name = {m.name: m for m in self.metrics}

    def __getitem__(self, name: str) -> Metric:
        if name not in self.by_name:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(self.by_name)}")
        return self.by_name[name]

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.metrics)

    def monitorable(self) -> List[str]:
        return [m.name for m in self.metrics if m.monitor]

    def line(self, m: PassMetrics) -> "OrderedDict[str, float]":
        return OrderedDict((metric.line, float(metric.compute(m))) for metric in self.metrics
                           if metric.line and metric.shown(m))

    def board(self, m: PassMetrics, class_names: Sequence[str]) -> List[Tuple[str, float]]:
        """``(tag, value)`` pairs; NaN figures (a class absent from the pass) are left out."""
        scalars = []
        for metric in self.metrics:
            if not metric.board or not metric.shown(m):
                continue
            value = metric.compute(m)
            for tag in metric.board:
                if metric.per_class:
                    scalars += [(f"{tag}/{name}", float(v)) for name, v in zip(class_names, value)
                                if not math.isnan(v)]
                elif not math.isnan(value):
                    scalars.append((tag, float(value)))
        return scalars

    def summary(self, m: PassMetrics, class_names: Sequence[str], with_intervals: bool) -> Dict:
        out: Dict = {}
        per_class = OrderedDict((name, {}) for name in class_names)
        for metric in self.metrics:
            if metric.passes == "binary" and not m.binary:
                continue
            value = metric.compute(m)
            key = metric.key or metric.name
            bounds = metric.interval(m) if with_intervals and metric.interval else None
            if metric.per_class:
                for c, name in enumerate(class_names):
                    per_class[name][key] = json_number(value[c])
                    if bounds is not None:
                        per_class[name][f"{key}_ci95"] = [json_number(v) for v in bounds[c]]
                continue
            target = out.setdefault(metric.group, {}) if metric.group else out
            target[key] = json_number(value)
            if bounds is not None:
                target[f"{key}_ci95"] = [json_number(v) for v in bounds]
        out["samples"] = int(round(m.total))
        out["per_class"] = per_class
        out["confusion_matrix"] = m.matrix.round().astype(int).tolist()
        return out


def json_number(value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


METRICS = Collection([
    Metric("tp", _binary("tp"), passes="binary", line="tp", board=("tp",), group="binary"),
    Metric("tn", _binary("tn"), passes="binary", line="tn", board=("tn",), group="binary"),
    Metric("fp", _binary("fp"), passes="binary", line="fp", board=("fp",), group="binary"),
    Metric("fn", _binary("fn"), passes="binary", line="fn", board=("fn",), group="binary"),
    Metric("accuracy", PassMetrics.accuracy, line="accuracy", board=("accuracy",), monitor=True),
    Metric("binary_accuracy", PassMetrics.accuracy, passes="binary", group="binary", key="accuracy"),
    Metric("binary_f1", _binary("f1"), passes="binary", line="f1", board=("f1",), group="binary", key="f1",
           monitor=True),
    Metric("binary_precision", _binary("precision"), passes="binary", line="precision", board=("precision",),
           group="binary", key="precision"),
    Metric("TPR", _binary("TPR"), passes="binary", line="TPR", board=("TPR",), group="binary"),
    Metric("FPR", _binary("FPR"), passes="binary", line="FPR", board=("FPR",), group="binary"),
    Metric("balanced_accuracy", PassMetrics.balanced_accuracy, interval=lambda m: m.balanced_accuracy_interval(),
           passes="multi", line="mean_per_class_acc", board=("mean_per_class_accuracy", "balanced_accuracy"),
           table="mean per-class accuracy", monitor=True),
    Metric("macro_f1", PassMetrics.macro_f1, passes="multi", board=("macro_f1",), table="macro F1", monitor=True),
    Metric("auc", lambda m: m.roc()[2], passes="binary", monitor=True),
    Metric("support", lambda m: m.support.round().astype(int), per_class=True),
    Metric("recall", PassMetrics.recall, per_class=True, interval=PassMetrics.recall_intervals, passes="multi",
           board=("per_class_accuracy",), table=""),
    Metric("precision", PassMetrics.precision, per_class=True, passes="multi", board=("per_class_precision",),
           table="P"),
    Metric("f1", PassMetrics.f1, per_class=True, passes="multi", board=("per_class_f1",), table="F1"),
])


def pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, np.floating) and np.isnan(value)) else f"{100 * float(value):.1f}%"


def _interval_text(bounds) -> str:
    lo, hi = bounds
    return "" if math.isnan(lo) else f" [{lo * 100:.1f}-{hi * 100:.1f}]"


def table_lines(m: PassMetrics, class_names: Sequence[str], with_intervals: bool = False) -> List[str]:
    """Per class ``K14: 83.3% [43.6-97.0] (n=6) P 71.4% F1 76.9%`` (the main figure =
    recall with its interval, support, then the other per-class figures with a table
    label), then one line per overall figure with a table label."""
    columns = [metric for metric in METRICS if metric.per_class and metric.table is not None]
    main = next(metric for metric in columns if metric.table == "")
    main_values, support = main.compute(m), m.support
    bounds = main.interval(m) if with_intervals and main.interval else None
    others = [(metric.table, metric.compute(m)) for metric in columns if metric is not main]
    lines = []
    for c, name in enumerate(class_names):
        n = int(round(support[c]))
        if n == 0:
            text = f"{name}: n/a (n=0)"
        else:
            text = f"{name}: {pct(main_values[c])}" + (_interval_text(bounds[c]) if bounds else "") + f" (n={n})"
        lines.append(text + "".join(f" {label} {pct(values[c])}" for label, values in others))
    for metric in METRICS:
        if metric.per_class or not metric.table:
            continue
        text = f"{metric.table}: {pct(metric.compute(m))}"
        if with_intervals and metric.interval:
            text += _interval_text(metric.interval(m))
        lines.append(text + (" (balanced accuracy)" if metric.name == "balanced_accuracy" else ""))
    return lines


def summary_of(m: PassMetrics, class_names: Sequence[str], with_intervals: bool = False) -> Dict:
    """A JSON-ready description (metrics.json)."""
    return METRICS.summary(m, class_names, with_intervals)


# --------------------------------------------------------------- the seed fork's API
