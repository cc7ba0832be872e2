"""Estimators of a stratified review: how good a model is on *your* recordings.

A review samples, per class, the detections in score strata (quantiles of the score)
plus strata of the units *below* the threshold that stand under that class (the only
way to see missed calls; ``reviews.sampling``). Within a stratum the reviewed units are
a simple random sample (a prefix of a random order), so stratum h with ``N[h]`` units of
which ``n[h]`` were reviewed and ``k[h]`` found to hold a call gives:

* the **stratified estimate** of the number of true calls ``sum_h N[h] k[h] / n[h]``
  (unbiased; the raw share of "correct" answers ``sum k / sum n`` is not, because the
  strata are sampled at different rates);
* the **figures shown** from the finite-population posterior: per stratum, the true count
  is ``k[h] + BetaBinomial(N[h] - n[h], a + k[h], b + n[h] - k[h])`` with the Jeffreys
  prior ``a = b = 1/2``; the median and the 2.5 and 97.5 percentiles of ``DRAWS`` joint
  draws give the estimate and its 95 % interval (one method, so the interval always holds
  its estimate) of any figure built from the counts: precision (true calls among the
  detections), recall (detected true calls among all true calls) and call density
  (units holding a call per hour of audio; the units of a recording do not overlap).
  Where a stratum has few answers the plug-in ``N k / n`` can lie far from the posterior
  (all three answered windows below the threshold empty: the plug-in says recall 100 %,
  while 180 unreviewed windows may hold missed calls); the summary flags such classes.

The precision curve and the threshold that reaches a target precision use every
reviewed unit of the class that a threshold on its score could detect (the detections,
and the windows below the threshold whose most probable class is this one), each
weighted by its inverse inclusion probability ``N[h]/n[h]``: the estimated precision of
everything scoring at least ``t`` is ``sum w * call / sum w`` over those scoring at
least ``t``. The threshold's interval comes from resampling the reviewed units within
their strata (a percentile bootstrap): it is approximate, covering the true threshold in
84 % of simulated reviews with about 40 reviewed units of the class and 93 % with about
100 (tests/reviews; README).

Everything here is a plain function on arrays; the review session and the tests use
them alike. Assumptions (README): skipped and unsure answers are missing at random
within their stratum; a unit holds at most one call; a per-recording call density
assumes the recording's units of a stratum hold calls at the stratum's rate.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

DRAWS = 4000
PRIOR = 0.5
SEED = 0
MIN_REVIEWS = 3          # fewer usable answers in a stratum: its figures rest mostly on the prior
NONE2 = (None, None)


@dataclass
class Stratum:
    """One stratum of one class: its units' count and the review so far."""

    name: str
    size: int                           # N: units in the stratum
    reviewed: int = 0                   # n: units with a usable answer
    correct: int = 0                    # k: of those, true calls of the class
    above: bool = True                  # detections (True) or below the threshold
    low: float = 0.0                    # score range of its units
    high: float = 1.0
    recordings: Dict[str, int] = field(default_factory=dict)     # units per recording

    @property
    def share(self) -> Optional[float]:
        return self.correct / self.reviewed if self.reviewed else None


def stratified_total(strata: Sequence[Stratum]) -> Optional[float]:
    """``sum N k / n``, or None while a non-empty stratum has no review."""
    total = 0.0
    for s in strata:
        if s.size == 0:
            continue
        if s.reviewed == 0:
            return None
        total += s.size * s.correct / s.reviewed
    return total


def naive_share(strata: Sequence[Stratum]) -> Optional[float]:
    """The raw share of correct answers (biased: for comparison only)."""
    n = sum(s.reviewed for s in strata)
    return sum(s.correct for s in strata) / n if n else None


def posterior_totals(strata: Sequence[Stratum], draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """``(draws, strata)`` draws of each stratum's number of true calls."""
    rng = np.random.default_rng(seed)
    out = np.zeros((draws, len(strata)))
    for j, s in enumerate(strata):
        rest = s.size - s.reviewed
        if rest <= 0:
            out[:, j] = s.correct
            continue
        p = rng.beta(PRIOR + s.correct, PRIOR + s.reviewed - s.correct, size=draws)
        out[:, j] = s.correct + rng.binomial(rest, p)
    return out


def answered(strata: Sequence[Stratum]) -> bool:
    """Whether every stratum with units has an answer (before that, no estimate is shown)."""
    return all(s.reviewed > 0 for s in strata if s.size > 0)


def _estimate(values: np.ndarray, shown: bool = True
              ) -> Tuple[Optional[float], Tuple[Optional[float], Optional[float]]]:
    """The posterior median and its 95 % interval, from the same draws (so the interval
    always holds the estimate); no estimate while ``shown`` is False (a stratum without
    an answer: the prior alone)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None, NONE2
    low, middle, high = np.percentile(values, [2.5, 50, 97.5])
    return (float(middle) if shown else None), (float(low), float(high))


def precision(above: Sequence[Stratum], draws: int = DRAWS, seed: int = SEED):
    """Share of true calls among the detections: ``(estimate, (low, high))``."""
    size = sum(s.size for s in above)
    if size == 0:
        return None, NONE2
    return _estimate(posterior_totals(above, draws, seed).sum(axis=1) / size, answered(above))


def recall(above: Sequence[Stratum], below: Sequence[Stratum], draws: int = DRAWS, seed: int = SEED):
    """Share of the true calls that were detected: ``(estimate, (low, high))`` (None
    without a below-threshold stratum: tables alone cannot show missed calls)."""
    if not below:
        return None, NONE2
    draws_all = posterior_totals(list(above) + list(below), draws, seed)
    t_above, t_below = draws_all[:, :len(above)].sum(axis=1), draws_all[:, len(above):].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _estimate(t_above / (t_above + t_below), answered(list(above) + list(below)))


def call_density(strata: Sequence[Stratum], hours: float, draws: int = DRAWS, seed: int = SEED,
                 recording: Optional[str] = None):
    """Expected true calls per hour of audio: ``(estimate, (low, high))``; for one
    ``recording`` its units of each stratum count (the stratum's share applies)."""
    if hours <= 0:
        return None, NONE2
    if recording is None:
        sizes = np.asarray([s.size for s in strata], dtype=np.float64)
    else:
        sizes = np.asarray([s.recordings.get(recording, 0) for s in strata], dtype=np.float64)
    totals = posterior_totals(strata, draws, seed)
    full = np.asarray([max(s.size, 1) for s in strata], dtype=np.float64)
    return _estimate((totals / full * sizes).sum(axis=1) / hours, answered(strata))


def too_few_reviews(strata: Sequence[Stratum], least: int = MIN_REVIEWS) -> bool:
    """Whether a stratum with units has fewer than ``least`` usable answers (and is not
    reviewed whole): its figures then rest mostly on the prior."""
    return any(s.size > 0 and s.reviewed < min(least, s.size) for s in strata)


# -------------------------------------------------------------------- thresholds
def weighted_precision_curve(scores: np.ndarray, correct: np.ndarray, weights: np.ndarray):
    """Estimated precision of everything scoring at least ``t``, for ``t`` each reviewed
    score (descending): ``(thresholds, precision)``; ``weights`` = inverse inclusion
    probabilities."""
    order = np.argsort(-scores, kind="stable")
    s, c, w = scores[order], correct[order], weights[order]
    true_weight, all_weight = np.cumsum(w * c), np.cumsum(w)
    keep = np.r_[s[1:] != s[:-1], True]                 # one point per distinct score
    return s[keep], (true_weight / all_weight)[keep]


def threshold_for_precision(scores: np.ndarray, correct: np.ndarray, weights: np.ndarray,
                            target: float) -> Optional[float]:
    """The lowest reviewed score whose estimated precision (of all units at or above it)
    reaches ``target``; None if none does."""
    if not len(scores):
        return None
    thresholds, values = weighted_precision_curve(scores, correct, weights)
    reaching = thresholds[values >= target]
    return float(reaching.min()) if len(reaching) else None


def threshold_interval(scores: np.ndarray, correct: np.ndarray, weights: np.ndarray, strata: np.ndarray,
                       target: float, resamples: int = 500, seed: int = SEED):
    """The 2.5 and 97.5 percentiles of the threshold over resamples of the reviewed units within
    their strata; None where fewer than half of the resamples reach the target."""
    if not len(scores):
        return NONE2
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == h) for h in np.unique(strata)]
    found = []
    for _ in range(resamples):
        pick = np.concatenate([rng.choice(g, len(g)) for g in groups])
        value = threshold_for_precision(scores[pick], correct[pick], weights[pick], target)
        if value is not None:
            found.append(value)
    if len(found) < resamples / 2:
        return NONE2
    return float(np.percentile(found, 2.5)), float(np.percentile(found, 97.5))
