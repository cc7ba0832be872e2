"""Event-level scores: detections against annotated calls, per class.

Two matching rules (``Matching``):

* ``overlap`` (default): a detection matches an annotation of the same class when their
  overlap is at least ``min_overlap`` of the shorter of the two; matching is one-to-one
  and greedy, the detections taken by ``Score`` (highest first) where they have one, else
  by start time, each taking the unmatched annotation it overlaps most.
* ``iou``: intersection over union at least ``iou`` (0.3), one-to-one, with the matching
  that maximises the number of matches (a maximum bipartite matching, as the DCASE
  few-shot bioacoustic event detection task scores).

Unmatched detections are false positives, unmatched annotations false negatives. Noise is
not an event class.
Overlapping events of different classes are counted in a call-type confusion table.
Two annotations of one class that overlap by 90 % or more are duplicates (counted once,
with a warning).
"""

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .raven import Event
from ..utils.atomic import atomic_write

log = logging.getLogger("ANIMAL-SPOT")
DUPLICATE_OVERLAP = 0.9
MISSED, NONE = "(missed)", "(none)"


def overlap(a: Event, b: Event) -> float:
    return max(0.0, min(a.end, b.end) - max(a.begin, b.begin))


def iou(a: Event, b: Event) -> float:
    shared = overlap(a, b)
    union = max(a.end, b.end) - min(a.begin, b.begin)
    return shared / union if union > 0 else float(a.begin == b.begin and a.end == b.end)


@dataclass(frozen=True)
class Matching:
    """How detections meet annotations: ``overlap`` (fraction of the shorter event, greedy)
    or ``iou`` (intersection over union, maximum matching)."""

    kind: str = "overlap"
    min_overlap: float = 0.5
    iou: float = 0.3

    def __post_init__(self):
        if self.kind not in ("overlap", "iou"):
            raise ValueError(f"--matching must be overlap or iou, not {self.kind!r}")

    def matches(self, annotation: Event, detection: Event) -> bool:
        if self.kind == "iou":
            return iou(annotation, detection) >= self.iou
        return overlaps_enough(annotation, detection, self.min_overlap)

    def describe(self) -> str:
        return (f"intersection over union >= {self.iou:g}, maximum one-to-one matching" if self.kind == "iou"
                else f"overlap >= {100 * self.min_overlap:g} % of the shorter event, greedy by score")


def overlaps_enough(a: Event, b: Event, min_overlap: float) -> bool:
    shorter = min(a.duration, b.duration)
    shared = overlap(a, b)
    return shared > 0 and shared >= min_overlap * shorter if shorter > 0 else shared > 0 or a.begin == b.begin


def is_noise(label: str) -> bool:
    return label.strip().lower() == "noise"


def drop_duplicates(annotations: List[Event], where: str = "") -> List[Event]:
    kept: List[Event] = []
    for event in sorted(annotations, key=lambda e: (e.begin, e.end)):
        twin = next((k for k in kept if k.label == event.label and overlaps_enough(k, event, DUPLICATE_OVERLAP)),
                    None)
        if twin is not None:
            log.warning(f"{where}{event.recording}: annotations {twin.begin}-{twin.end} and {event.begin}-{event.end} "
                        f"({event.label}) overlap by 90 % or more; counted once")
            continue
        kept.append(event)
    return kept


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: "Counts") -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    def figures(self) -> Dict[str, Optional[float]]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else None
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else None
        f1 = 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else None
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": precision, "recall": recall, "f1": f1}


@dataclass
class Scores:
    per_class: Dict[str, Counts] = field(default_factory=lambda: OrderedDict())
    confusion: Dict[str, Dict[str, int]] = field(default_factory=dict)   # annotated -> detected -> count

    def counts(self, label: str) -> Counts:
        return self.per_class.setdefault(label, Counts())

    def confuse(self, annotated: str, detected: str) -> None:
        row = self.confusion.setdefault(annotated, {})
        row[detected] = row.get(detected, 0) + 1

    def total(self) -> Counts:
        total = Counts()
        for counts in self.per_class.values():
            total.add(counts)
        return total

    def to_json(self) -> dict:
        return {"classes": {label: counts.figures() for label, counts in sorted(self.per_class.items())},
                "all": self.total().figures(), "confusion": self.confusion}


def match_recording(detections: Sequence[Event], annotations: Sequence[Event], matching, scores: Scores) -> None:
    """Add one recording's matches to ``scores`` (``matching``: a ``Matching``, or a
    number = the overlap rule's ``min_overlap``)."""
    if not isinstance(matching, Matching):
        matching = Matching("overlap", float(matching))
    detections = [d for d in detections if not is_noise(d.label)]
    annotations = [a for a in annotations if not is_noise(a.label)]
    for event in list(detections) + list(annotations):
        scores.counts(event.label)
    pairs = maximum_matching(detections, annotations, matching) if matching.kind == "iou" \
        else greedy_matching(detections, annotations, matching)
    matched_detections = {id(d) for d, _ in pairs}
    matched_annotations = {id(a) for _, a in pairs}
    for detection, annotation in pairs:
        scores.counts(detection.label).tp += 1
        scores.confuse(annotation.label, detection.label)
    unmatched_detections = [d for d in detections if id(d) not in matched_detections]
    for detection in unmatched_detections:
        scores.counts(detection.label).fp += 1
    for annotation in annotations:
        if id(annotation) in matched_annotations:
            continue
        scores.counts(annotation.label).fn += 1
        other = next((d for d in unmatched_detections if matching.matches(annotation, d)), None)
        scores.confuse(annotation.label, other.label if other else MISSED)
    for detection in unmatched_detections:
        if not any(matching.matches(a, detection) for a in annotations):
            scores.confuse(NONE, detection.label)


def greedy_matching(detections: Sequence[Event], annotations: Sequence[Event], matching: Matching):
    """The overlap rule: detections by score (else time), each takes the free annotation of
    its class that it overlaps most."""
    by_score = all(d.score is not None for d in detections) and detections
    order = sorted(detections, key=(lambda d: (-d.score, d.begin)) if by_score else (lambda d: (d.begin, d.end)))
    free, pairs = list(annotations), []
    for detection in order:
        candidates = [a for a in free if a.label == detection.label and matching.matches(a, detection)]
        if candidates:
            best = max(candidates, key=lambda a: overlap(a, detection))
            free.remove(best)
            pairs.append((detection, best))
    return pairs


def maximum_matching(detections: Sequence[Event], annotations: Sequence[Event], matching: Matching):
    """The most one-to-one pairs of the same class with IoU >= the bound (Hopcroft-Karp)."""
    import numpy as np
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    if not detections or not annotations:
        return []
    rows, cols = [], []
    for i, d in enumerate(detections):
        for j, a in enumerate(annotations):
            if a.label == d.label and matching.matches(a, d):
                rows.append(i)
                cols.append(j)
    if not rows:
        return []
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(detections), len(annotations)))
    partner = maximum_bipartite_matching(graph, perm_type="column")
    return [(detections[i], annotations[j]) for i, j in enumerate(partner) if j >= 0]


def score(detections: Dict[str, List[Event]], annotations: Dict[str, List[Event]], min_overlap=0.5,
          unannotated_note=None) -> Scores:
    """Scores over every recording (``min_overlap``: a number, the overlap rule, or a
    ``Matching``). A predicted recording without annotations counts all
    its detections as false positives (``unannotated_note`` is told); an annotated
    recording that was not predicted is an error."""
    missing = sorted(set(annotations) - set(detections))
    if missing:
        raise ValueError(f"annotations for recording(s) that were not predicted: {', '.join(missing)}")
    scores = Scores()
    for recording in sorted(detections):
        if recording not in annotations and unannotated_note:
            unannotated_note(recording)
        match_recording(detections[recording], drop_duplicates(annotations.get(recording, [])), min_overlap, scores)
    return scores


def table_lines(scores: Scores) -> List[str]:
    def fmt(value):
        return "-" if value is None else f"{100 * value:.1f}%"
    rows = [("class", "TP", "FP", "FN", "precision", "recall", "F1")]
    for label, counts in sorted(scores.per_class.items()):
        f = counts.figures()
        rows.append((label, str(f["tp"]), str(f["fp"]), str(f["fn"]), fmt(f["precision"]), fmt(f["recall"]),
                     fmt(f["f1"])))
    f = scores.total().figures()
    rows.append(("all", str(f["tp"]), str(f["fp"]), str(f["fn"]), fmt(f["precision"]), fmt(f["recall"]),
                 fmt(f["f1"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            for r in rows]


def csv_text(scores: Scores) -> str:
    lines = ["class,tp,fp,fn,precision,recall,f1"]
    entries = [(label, counts.figures()) for label, counts in sorted(scores.per_class.items())]
    entries.append(("all", scores.total().figures()))
    for label, f in entries:
        values = ["" if f[k] is None else (f"{f[k]:.6f}" if isinstance(f[k], float) else str(f[k]))
                  for k in ("tp", "fp", "fn", "precision", "recall", "f1")]
        lines.append(",".join([label] + values))
    return "\n".join(lines) + "\n"


def pr_curve(points: Dict[str, List[Tuple[float, float, float]]], path: str,
             classes: Sequence[str] = ()) -> List[str]:
    """Precision over recall per class (``points``: class -> [(threshold, precision,
    recall)]); every class of ``points`` and ``classes`` is drawn or named on the figure as
    not drawn (no detection at any threshold: precision is undefined). Returns those."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5.4))
    axis = figure.add_subplot()
    missing = []
    for label in sorted(set(points) | set(classes)):
        kept = [(r, p) for _, p, r in points.get(label, []) if p is not None and r is not None]
        if kept:
            axis.plot([r for r, _ in kept], [p for _, p in kept], marker=".", label=label)
        else:
            missing.append(label)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_title("Event-level precision-recall over thresholds")
    if len(missing) < len(set(points) | set(classes)):
        axis.legend(loc="lower left", fontsize=8)
    if missing:
        figure.text(0.02, 0.01, "not drawn (no detection at any threshold): " + ", ".join(missing), fontsize=8,
                    color="firebrick", wrap=True)
        figure.subplots_adjust(bottom=0.16)
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    return missing
