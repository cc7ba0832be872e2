"""Event-level scores: detections against annotated calls, per class.

A detection matches an annotation of the same class when their overlap is at least
``min_overlap`` of the shorter of the two; matching is one-to-one and greedy, the
detections taken by ``Score`` (highest first) where they have one, else by start time,
each taking the unmatched annotation it overlaps most. Unmatched detections are false
positives, unmatched annotations false negatives. Noise is not an event class.
Overlapping events of different classes are counted in a call-type confusion table.
Two annotations of one class that overlap by 90 % or more are duplicates (counted once,
with a warning).
"""

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from prediction.annotations import Event

log = logging.getLogger("ANIMAL-SPOT")
DUPLICATE_OVERLAP = 0.9
MISSED, NONE = "(missed)", "(none)"


def overlap(a: Event, b: Event) -> float:
    return max(0.0, min(a.end, b.end) - max(a.begin, b.begin))


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


def match_recording(detections: Sequence[Event], annotations: Sequence[Event], min_overlap: float,
                    scores: Scores) -> None:
    """Add one recording's matches to ``scores``."""
    detections = [d for d in detections if not is_noise(d.label)]
    annotations = [a for a in annotations if not is_noise(a.label)]
    for event in list(detections) + list(annotations):
        scores.counts(event.label)
    by_score = all(d.score is not None for d in detections) and detections
    order = sorted(detections, key=(lambda d: (-d.score, d.begin)) if by_score else (lambda d: (d.begin, d.end)))
    free = list(annotations)
    unmatched_detections = []
    for detection in order:
        candidates = [a for a in free if a.label == detection.label and overlaps_enough(a, detection, min_overlap)]
        if candidates:
            best = max(candidates, key=lambda a: overlap(a, detection))
            free.remove(best)
            scores.counts(detection.label).tp += 1
            scores.confuse(best.label, detection.label)
        else:
            scores.counts(detection.label).fp += 1
            unmatched_detections.append(detection)
    for annotation in free:
        scores.counts(annotation.label).fn += 1
        other = next((d for d in unmatched_detections if overlaps_enough(annotation, d, min_overlap)), None)
        scores.confuse(annotation.label, other.label if other else MISSED)
    for detection in unmatched_detections:
        if not any(overlaps_enough(a, detection, min_overlap) for a in annotations):
            scores.confuse(NONE, detection.label)


def score(detections: Dict[str, List[Event]], annotations: Dict[str, List[Event]], min_overlap: float = 0.5,
          unannotated_note=None) -> Scores:
    """Scores over every recording. A predicted recording without annotations counts all
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


def pr_curve(points: Dict[str, List[Tuple[float, float, float]]], path: str) -> None:
    """Precision over recall per class (``points``: class -> [(threshold, precision, recall)])."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5))
    axis = figure.add_subplot()
    for label, curve in sorted(points.items()):
        kept = [(r, p) for _, p, r in curve if p is not None and r is not None]
        if kept:
            axis.plot([r for r, _ in kept], [p for _, p in kept], marker=".", label=label)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_title("Event-level precision-recall over thresholds")
    axis.legend(loc="lower left", fontsize=8)
    from utils.atomic import atomic_write

    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
