"""Metrics accumulated over one pass: the original's binary set and accuracy, plus
per-class accuracy, the confusion matrix and ROC/AUC."""

import math
from collections import OrderedDict
from typing import List, Sequence

import torch

BINARY_METRICS = ("tp", "tn", "fp", "fn", "accuracy", "f1", "precision", "TPR", "FPR")


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class PassMetrics:
    """The metrics of the epoch line: binary (tp, tn, fp, fn, accuracy, f1, precision,
    TPR, FPR; positive class 1) or, for more classes, accuracy."""

    def __init__(self, num_classes: int):
        self.binary = num_classes == 2
        self.reset()

    def reset(self):
        self.correct = self.total = 0
        self.tp = self.tn = self.fp = self.fn = 0.0

    def update(self, labels: torch.Tensor, preds: torch.Tensor):
        labels, preds = labels.detach().view(-1), preds.detach().view(-1)
        self.correct += int((labels == preds).sum())
        self.total += labels.numel()
        if self.binary:
            self.tp += float(((labels == 1) & (preds == 1)).sum())
            self.tn += float(((labels == 0) & (preds == 0)).sum())
            self.fp += float(((labels == 0) & (preds == 1)).sum())
            self.fn += float(((labels == 1) & (preds == 0)).sum())

    def compute(self) -> "OrderedDict[str, float]":
        accuracy = _ratio(self.correct, self.total)
        if not self.binary:
            return OrderedDict(accuracy=accuracy)
        precision = _ratio(self.tp, self.tp + self.fp)
        recall = _ratio(self.tp, self.tp + self.fn)
        return OrderedDict(tp=self.tp, tn=self.tn, fp=self.fp, fn=self.fn, accuracy=accuracy,
                           f1=_ratio(2 * precision * recall, precision + recall),
                           precision=precision, TPR=recall, FPR=_ratio(self.fp, self.fp + self.tn))


class PerClassAccuracy:
    """Accuracy (recall) of each class over a pass.

    ``update(labels, predictions)``; ``compute()`` returns a tensor of ``num_classes``
    accuracies in which classes without any sample are NaN (not 0); ``mean()`` averages
    the classes that had samples; ``counts`` holds the samples per class."""

    def __init__(self, num_classes: int, device="cpu"):
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.reset()

    def reset(self):
        self.correct = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        self.counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)

    def update(self, labels: torch.Tensor, predictions: torch.Tensor):
        labels = labels.detach().view(-1).to(self.device, torch.long)
        predictions = predictions.detach().view(-1).to(self.device, torch.long)
        self.counts += torch.bincount(labels, minlength=self.num_classes)
        self.correct += torch.bincount(labels[labels == predictions], minlength=self.num_classes)

    def compute(self) -> torch.Tensor:
        acc = self.correct.double() / self.counts.double()
        return torch.where(self.counts > 0, acc, torch.full_like(acc, float("nan"))).float()

    def mean(self) -> float:
        present = self.counts > 0
        return float(self.compute()[present].mean()) if bool(present.any()) else float("nan")

    def table(self, class_names: Sequence[str]) -> List[str]:
        """Lines ``NAME: 93.3% (n=15)``; a class without samples reads ``n/a (n=0)``."""
        acc = self.compute().tolist()
        lines = []
        for name, value, n in zip(class_names, acc, self.counts.tolist()):
            shown = "n/a" if math.isnan(value) else f"{100 * value:.1f}%"
            lines.append(f"{name}: {shown} (n={n})")
        mean = self.mean()
        lines.append(f"mean per-class accuracy: {'n/a' if math.isnan(mean) else f'{100 * mean:.1f}%'}")
        return lines


class ConfusionMatrix:
    """Rows = true class, columns = predicted class."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self):
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, labels: torch.Tensor, predictions: torch.Tensor):
        idx = labels.detach().view(-1).cpu() * self.num_classes + predictions.detach().view(-1).cpu()
        self.matrix += torch.bincount(idx, minlength=self.num_classes ** 2).view(self.num_classes, -1)

    def normalized(self) -> torch.Tensor:
        rows = self.matrix.sum(dim=1, keepdim=True).double()
        return torch.where(rows > 0, self.matrix.double() / rows.clamp(min=1), torch.zeros(1, dtype=torch.double))


class RocMeter:
    """ROC curve and AUC from scores of the positive class; AUC is NaN when a pass holds
    only one class (reported as such, not silently as a number)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.scores: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []

    def update(self, scores: torch.Tensor, labels: torch.Tensor):
        self.scores.append(scores.detach().view(-1).float().cpu())
        self.labels.append(labels.detach().view(-1).cpu())

    def curve(self):
        if not self.scores:
            return torch.zeros(1), torch.zeros(1), float("nan")
        scores, labels = torch.cat(self.scores), torch.cat(self.labels)
        order = torch.argsort(scores, descending=True)
        positives = (labels[order] == 1).double()
        pos, neg = float(positives.sum()), float((1 - positives).sum())
        tpr = torch.cat([torch.zeros(1, dtype=torch.double), positives.cumsum(0)]) / (pos or float("nan"))
        fpr = torch.cat([torch.zeros(1, dtype=torch.double), (1 - positives).cumsum(0)]) / (neg or float("nan"))
        auc = float(torch.trapz(tpr, fpr)) if pos and neg else float("nan")
        return fpr, tpr, auc
