"""Calibrated probabilities and per-class decision thresholds, chosen on validation.

* Temperature scaling (Guo et al. 2017): one temperature T > 0 that minimises the
  negative log-likelihood of ``softmax(logits / T)`` on the validation logits.
* Decision rule: a window's top class c (by calibrated probability) is a detection when
  its probability reaches c's threshold; otherwise the window is not a detection. A binary
  detector decides on ``p(target) >= threshold`` as the original. The noise class has no
  threshold. A class's threshold maximises its F1 on validation, or is the lowest that
  reaches ``target_precision`` where one does; a class with fewer than
  ``MIN_SAMPLES`` validation samples keeps the default (0.5), with a warning.
* Expected calibration error: 15 equal-width bins of the top probability.
* The "unknown" answer: an out-of-distribution score of each window, and the threshold
  beyond which ``--unknown_false_rejection`` of the known validation clips lie.
  ``centroid_distance`` (default): the cosine distance of the window's pooled features
  to the nearest class centroid of the training clips; ``max_probability``: 1 - the top
  softmax probability (works without features, e.g. TorchScript, but a network is often
  confidently wrong on calls it never heard).
"""

import logging
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..utils.classmap import binary_count

log = logging.getLogger("ANIMAL-SPOT")
DEFAULT_THRESHOLD = 0.5
MIN_SAMPLES = 5
ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (LBFGS on log T, from T = 1), kept within
    ``TEMPERATURE_RANGE`` (a model whose outputs carry no information drives T to infinity)."""
    if len(labels) == 0:
        return 1.0
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss
    optimizer.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t):
        return 1.0
    return min(max(t, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    if len(labels) == 0:
        return float("nan")
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def detections(probs: np.ndarray, thresholds: Sequence[Optional[float]], binary: bool) -> np.ndarray:
    """The detected class of each row, or -1 (not a detection)."""
    if binary:
        t = thresholds[1] if thresholds[1] is not None else DEFAULT_THRESHOLD
        return np.where(probs[:, 1] >= t, 1, -1)
    top = probs.argmax(axis=1)
    limit = np.array([np.inf if t is None else t for t in thresholds])[top]
    return np.where(probs[np.arange(len(top)), top] >= limit, top, -1)


def class_scores(probs: np.ndarray, labels: np.ndarray, c: int, binary: bool):
    """Per row: the score with which class c would be detected (-inf where it cannot be)."""
    if binary:
        return probs[:, 1]
    top = probs.argmax(axis=1)
    return np.where(top == c, probs[:, c], -np.inf)


def choose_threshold(scores: np.ndarray, is_class: np.ndarray, target_precision: Optional[float]) -> Optional[float]:
    """The threshold for one class: the best F1, or the lowest reaching the precision."""
    candidates = np.unique(scores[np.isfinite(scores)])
    best, best_value = None, -1.0
    positives = is_class.sum()
    for t in candidates:
        detected = scores >= t
        tp = float((detected & is_class).sum())
        fp = float((detected & ~is_class).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        f1 = 2 * tp / (2 * tp + fp + (positives - tp)) if positives + fp else 0.0
        if target_precision is not None:
            if precision >= target_precision:
                return float(t)
            continue
        if f1 > best_value:
            best, best_value = float(t), f1
    return best


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, names: Sequence[str], noise: Optional[int],
                      target_precision: Optional[float] = None) -> Dict[str, float]:
    """class name -> threshold for every class but noise."""
    binary = binary_count(len(names))
    chosen: Dict[str, float] = {}
    for c, name in enumerate(names):
        if c == noise or (binary and c != 1):
            continue
        support = int((labels == c).sum())
        if support < MIN_SAMPLES:
            log.warning(f"Class {name} has {support} validation sample(s) (< {MIN_SAMPLES}): "
                        f"keeping the default threshold {DEFAULT_THRESHOLD}")
            chosen[name] = DEFAULT_THRESHOLD
            continue
        t = choose_threshold(class_scores(probs, labels, c, binary), labels == c, target_precision)
        if t is None:
            if target_precision is not None:
                log.warning(f"Class {name}: no threshold reaches precision {target_precision} on validation; "
                            "using the best-F1 threshold")
                t = choose_threshold(class_scores(probs, labels, c, binary), labels == c, None)
            t = DEFAULT_THRESHOLD if t is None else t
        chosen[name] = t
    return chosen


def threshold_list(thresholds: Dict[str, float], names: Sequence[str]) -> List[Optional[float]]:
    return [thresholds.get(name) for name in names]


def detection_figures(probs: np.ndarray, labels: np.ndarray, names: Sequence[str],
                      thresholds: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """Per class with a threshold: precision, recall, F1 and support of its detections."""
    binary = binary_count(len(names))
    detected = detections(probs, threshold_list(thresholds, names), binary)
    out = {}
    for c, name in enumerate(names):
        if name not in thresholds:
            continue
        tp = float(((detected == c) & (labels == c)).sum())
        fp = float(((detected == c) & (labels != c)).sum())
        fn = float(((detected != c) & (labels == c)).sum())
        out[name] = {"threshold": thresholds[name], "support": int((labels == c).sum()),
                     "precision": tp / (tp + fp) if tp + fp else None,
                     "recall": tp / (tp + fn) if tp + fn else None,
                     "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None}
    return out


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray, names: Sequence[str], noise: Optional[int],
              target_precision: Optional[float] = None) -> Dict:
    """Temperature, thresholds and the validation figures they give."""
    temperature = fit_temperature(val_logits, val_labels)
    raw, calibrated = softmax(val_logits), softmax(val_logits, temperature)
    thresholds = choose_thresholds(calibrated, val_labels, names, noise, target_precision)
    return {"temperature": temperature, "thresholds": thresholds,
            "ece_before": expected_calibration_error(raw, val_labels),
            "ece_after": expected_calibration_error(calibrated, val_labels),
            "validation": detection_figures(calibrated, val_labels, names, thresholds)}


def calibrated_from_probabilities(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities from raw softmax probabilities (as a log holds them):
    ``softmax(log p / T)`` equals ``softmax(logits / T)``."""
    with np.errstate(divide="ignore"):
        return softmax(np.log(np.clip(probs, 1e-45, None)), temperature)


# --------------------------------------------------------------------- unknown
UNKNOWN_SCORES = ("centroid_distance", "max_probability")


def class_centroids(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The mean direction of each class's pooled features (rows of unit length); classes
    without samples are left out."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    rows = [unit[labels == c].mean(axis=0) for c in range(num_classes) if (labels == c).any()]
    rows = np.stack(rows) if rows else np.zeros((0, features.shape[1]))
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def unknown_scores(unknown: Dict, features: Optional[np.ndarray] = None,
                   probs: Optional[np.ndarray] = None) -> np.ndarray:
    """The out-of-distribution score of each row, high = unknown: ``centroid_distance`` is
    1 - the cosine similarity of the pooled features to the nearest class centroid (of the
    training clips); ``max_probability`` is 1 - the top softmax probability."""
    score = unknown["score"]
    if score == "centroid_distance":
        if features is None:
            raise ValueError("the centroid_distance unknown score needs the pooled features")
        centroids = np.asarray(unknown["centroids"], dtype=np.float64)
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return 1.0 - (unit @ centroids.T).max(axis=1)
    if score == "max_probability":
        return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)
    raise ValueError(f"unknown out-of-distribution score {score!r}; choose one of {', '.join(UNKNOWN_SCORES)}")


def fit_unknown(score: str, false_rejection: float, val_features: np.ndarray, val_logits: np.ndarray,
                train_features: Optional[np.ndarray] = None, train_labels: Optional[np.ndarray] = None) -> Dict:
    """``{"score", "threshold", "false_rejection"[, "centroids"]}``: a window whose score
    exceeds the threshold is unknown; the threshold is the ``1 - false_rejection``
    quantile of the known validation clips' scores."""
    unknown = {"score": score, "threshold": float("inf"), "false_rejection": float(false_rejection)}
    if score == "centroid_distance":
        unknown["centroids"] = class_centroids(train_features, train_labels, val_logits.shape[1]).tolist()
    if score not in UNKNOWN_SCORES:
        raise ValueError(f"unknown out-of-distribution score {score!r}; choose one of {', '.join(UNKNOWN_SCORES)}")
    values = unknown_scores(unknown, val_features, softmax(val_logits) if len(val_logits) else val_logits)
    if len(values):
        unknown["threshold"] = float(np.quantile(values, 1.0 - false_rejection))
    return unknown


def is_unknown(unknown: Optional[Dict], features: Optional[np.ndarray], probs: np.ndarray) -> np.ndarray:
    """Per row: beyond the unknown threshold."""
    if not unknown:
        return np.zeros(len(probs), dtype=bool)
    return unknown_scores(unknown, features, probs) > unknown["threshold"]


def unknown_report(unknown: Dict, features: Optional[np.ndarray], logits: np.ndarray) -> Dict:
    """How often clips (held-out known test clips) are called unknown."""
    flagged = is_unknown(unknown, features, softmax(logits) if len(logits) else logits)
    return {"clips": int(len(flagged)), "rejected": int(flagged.sum()),
            "rejected_share": float(flagged.mean()) if len(flagged) else None}
