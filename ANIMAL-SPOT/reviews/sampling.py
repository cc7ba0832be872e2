"""The review's sample: per class, strata of units and the order they are reviewed in.

Per class, the detections are split into ``bins`` score strata (quantiles), and so are
the windows below the threshold that stand under it; each stratum's units come in a
random order fixed by the seed, and the review takes them round-robin over the strata
(detections from the highest scores down, then below the threshold), so any prefix of the
queue is a stratified random sample. ``per_class`` reviews are shared equally among a
class's strata; each planned unit records its inclusion probability (planned reviews /
stratum size), which the estimators use.
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .estimators import Stratum
from .units import Unit


def score_strata(scores: Sequence[float], bins: int) -> List[np.ndarray]:
    """Indices of ``scores`` in ``bins`` quantile strata (lowest first); equal scores stay
    together, so there may be fewer strata."""
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        return []
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1], method="lower"))
    which = np.searchsorted(edges, scores, side="right")
    return [np.flatnonzero(which == b) for b in range(len(edges) + 1) if (which == b).any()]


def allocate(per_class: int, sizes: Sequence[int]) -> List[int]:
    """``per_class`` reviews shared equally among the strata (the highest strata get the
    remainder), at most a stratum's size each; what a small stratum cannot take goes to
    the others."""
    planned = [0] * len(sizes)
    left = per_class
    open_ = [i for i, n in enumerate(sizes) if n > 0]
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(sorted(open_, reverse=True)):
            planned[i] += share + (1 if rank < extra else 0)
        left = 0
        for i in list(open_):
            if planned[i] >= sizes[i]:
                left += planned[i] - sizes[i]
                planned[i] = sizes[i]
                open_.remove(i)
    return planned


@dataclass
class ClassPlan:
    name: str
    strata: List[Stratum]
    queue: List[str]                     # unit ids in review order
    members: Dict[str, List[str]]        # stratum -> all its unit ids


def stratify(units: List[Unit], cls: str, side: str, bins: int) -> List[Tuple[str, List[Unit]]]:
    """``(name, units)`` of the score strata of one side (above / below) of a class."""
    scored = [u for u in units if u.score is not None]
    if units and len(scored) == len(units):
        return [(f"{cls}|{side}|{b}", [units[i] for i in index])
                for b, index in enumerate(score_strata([u.score for u in units], bins), start=1)]
    return [(f"{cls}|{side}|1", units)] if units else []


def build_plan(units: List[Unit], per_class: int, bins: int, seed: int, below_seen: bool = True
               ) -> "OrderedDict[str, ClassPlan]":
    """Strata, allocation and order per class (see the module's description);
    ``below_seen``: the sources showed the windows below the threshold (logs), so a class
    without such windows has an empty below stratum rather than an unknown one."""
    plans: "OrderedDict[str, ClassPlan]" = OrderedDict()
    by_class: Dict[str, List[Unit]] = {}
    for unit in units:
        by_class.setdefault(unit.cls, []).append(unit)
    for cls in sorted(by_class):
        above = [u for u in by_class[cls] if u.above]
        below = [u for u in by_class[cls] if not u.above]
        groups = stratify(above, cls, "above", bins) + stratify(below, cls, "below", bins)
        if not below and below_seen and above:
            groups.append((f"{cls}|below|1", []))
        if not groups:
            continue
        planned = allocate(per_class, [len(g) for _, g in groups])
        strata, orders, members = [], [], {}
        for (name, group), n in zip(groups, planned):
            stratum, order = draw(name, group, n, seed)
            strata.append(stratum)
            orders.append(order)
            members[name] = [u.id for u in group]
        turn = [o for o, s in zip(orders, strata) if s.above][::-1] + [o for o, s in zip(orders, strata) if not s.above]
        queue = [order[rank] for rank in range(max(len(o) for o in orders)) for order in turn if rank < len(order)]
        plans[cls] = ClassPlan(cls, strata, queue, members)
    return plans


def draw(name: str, group: List[Unit], n: int, seed: int) -> Tuple[Stratum, List[str]]:
    """A stratum's description and the ids of its ``n`` planned units, in their random order."""
    above = name.split("|")[1] == "above"
    if not group:
        return Stratum(name, 0, above=above), []
    group = sorted(group, key=lambda u: (u.recording, u.channel, u.begin, u.end))
    rng = np.random.default_rng(int(hashlib.sha1(f"{seed}|{name}".encode()).hexdigest()[:15], 16))
    order = [group[i] for i in rng.permutation(len(group))]
    for unit in group:
        unit.stratum = name
    for unit in order[:n]:
        unit.inclusion = n / len(group)
    scores = [u.score for u in group if u.score is not None]
    counts: Dict[str, int] = {}
    for unit in group:
        counts[unit.recording] = counts.get(unit.recording, 0) + 1
    return (Stratum(name, len(group), above=above, low=min(scores) if scores else 0.0,
                    high=max(scores) if scores else 1.0, recordings=counts), [u.id for u in order[:n]])
