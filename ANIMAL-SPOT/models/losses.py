"""Tools for small, imbalanced call-type sets: class weights for the loss, weights for a
class-balanced sampler, focal loss and label smoothing.

Weights come from the training split's class counts and are normalised to mean 1 over
the classes: ``inverse`` 1/n, ``sqrt_inverse`` 1/sqrt(n), ``effective_num``
(1 - beta) / (1 - beta^n) (Cui et al. 2019, beta = 0.999). ``none`` gives 1 for all.
"""

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMES = ("none", "inverse", "sqrt_inverse", "effective_num")
SEED_SPELLINGS = {"inverse_freq": "inverse", "sqrt_inverse_freq": "sqrt_inverse"}
EFFECTIVE_BETA = 0.999


def scheme_name(text: str) -> str:
    """A scheme name, accepting the seed fork's spellings."""
    name = SEED_SPELLINGS.get(text, text)
    if name not in SCHEMES:
        raise ValueError(f"unknown weighting {text!r}; choose one of {', '.join(SCHEMES + tuple(SEED_SPELLINGS))}")
    return name


def class_weights(counts: Sequence[int], scheme: str, names: Optional[Sequence[str]] = None,
                  beta: float = EFFECTIVE_BETA) -> List[float]:
    """One weight per class, mean 1; a class without training files is an error naming it."""
    scheme = scheme_name(scheme)
    if scheme == "none":
        return [1.0] * len(counts)
    empty = [names[i] if names else str(i) for i, n in enumerate(counts) if n <= 0]
    if empty:
        raise ValueError(f"class(es) {', '.join(empty)} have no training files: {scheme} weighting "
                         "needs at least one file per class")
    if scheme == "inverse":
        raw = [1.0 / n for n in counts]
    elif scheme == "sqrt_inverse":
        raw = [1.0 / math.sqrt(n) for n in counts]
    else:
        raw = [(1.0 - beta) / (1.0 - beta ** n) for n in counts]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


def parse_boosts(text: Optional[str], names: Sequence[str]) -> Dict[str, float]:
    """``CLASS=FACTOR,...`` (the seed fork's ``--rare_class_boost``) -> {class: factor}."""
    if not text:
        return {}
    boosts = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not sep or factor <= 0:
            raise ValueError(f"--rare_class_boost: {part.strip()!r} is not CLASS=FACTOR with a positive factor")
        if name not in names:
            raise ValueError(f"--rare_class_boost: unknown class {name!r}; the classes are {', '.join(names)}")
        boosts[name] = factor
    return boosts


def weights_table(names: Sequence[str], counts: Sequence[int], weights: Sequence[float]) -> List[str]:
    width = max(len(n) for n in names)
    return [f"{name:<{width}}  n={count:<6} weight={weight:.3f}" for name, count, weight in zip(names, counts, weights)]


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) with class weights and label smoothing:
    per class term ``-(1 - p_c)^gamma log p_c``, mixed over the smoothed target and
    weighted as ``nn.CrossEntropyLoss`` does (so ``gamma = 0`` is cross-entropy)."""

    def __init__(self, gamma: float = 2.0, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, not {gamma}")
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        terms = -((1 - log_p.exp()) ** self.gamma) * log_p                       # (B, C)
        classes = logits.shape[1]
        weight = self.weight if self.weight is not None else torch.ones(classes, device=logits.device)
        true_term = terms.gather(1, target.unsqueeze(1)).squeeze(1) * weight[target]
        smooth_term = (terms * weight).sum(dim=1) / classes
        eps = self.label_smoothing
        per_sample = (1 - eps) * true_term + eps * smooth_term
        return per_sample.sum() / weight[target].sum()


def make_loss(kind: str = "ce", weights: Optional[Sequence[float]] = None, label_smoothing: float = 0.0,
              focal_gamma: float = 2.0) -> nn.Module:
    weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    if kind == "focal":
        return FocalLoss(focal_gamma, weight, label_smoothing)
    if kind != "ce":
        raise ValueError(f"unknown loss {kind!r}; choose ce or focal")
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
