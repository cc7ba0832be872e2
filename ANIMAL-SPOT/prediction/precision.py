"""How a prediction run's network runs on this machine, and what ``--amp`` costs in answers.

* ``Trial``: the memory format (contiguous or channels-last) and, with ``--amp``, the
  precision (float32 or the device's reduced one) are chosen by timing the first real
  batches of the run, as cuDNN's benchmark mode does: each candidate warms up on one
  batch, then the candidates take turns on ``ROUNDS`` batches each, and the fastest per
  window wins. Every trial batch's result is used. Reduced precision is kept only where
  it is faster here: where it is not (a CPU that emulates bfloat16, a small network),
  the run stays float32 and says so.
* ``Disagreement``: bfloat16 rounds every layer, so a window near a decision boundary
  may be decided otherwise than in float32; no bound on a deep network's rounding error
  is tight enough to promise the same decisions. Instead, every ``CHECK_EVERY``-th
  window of a reduced-precision run is computed in float32 too, and the run reports the
  share of those windows whose decision (class or no detection, detector gate, unknown)
  differs, with its 95 % Wilson interval, so the user sees what ``--amp`` changes on
  their recordings. The outputs are the reduced-precision results.
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..evaluation.intervals import wilson
from .decisions import DecisionRule
from ..utils.classmap import ClassMap
from ..utils.runtime import MEMORY_FORMATS, Precision

log = logging.getLogger("PREDICT")
ROUNDS = 2
CHECK_EVERY = 32


class Trial:
    """Chooses one of ``candidates`` (``(memory format, Precision)``) by timing batches."""

    def __init__(self, candidates: List[Tuple[str, Precision]]):
        self.candidates = list(candidates)
        self.order = self.candidates + self.candidates * ROUNDS      # warm-up, then timed turns
        self.calls = 0
        self.chosen: Optional[Tuple[str, Precision]] = self.candidates[0] if len(self.candidates) == 1 else None
        self.times: Dict[int, float] = {}

    @classmethod
    def of(cls, memory_format: str, precision: Precision) -> "Trial":
        """The candidates of a run: the given memory format or both (``auto``), in float32
        and, where ``precision`` is reduced, in it too."""
        formats = list(MEMORY_FORMATS) if memory_format == "auto" else [memory_format]
        precisions = [Precision()] + ([precision] if precision.dtype is not None else [])
        return cls([(f, p) for p in precisions for f in formats])

    @property
    def current(self) -> Tuple[str, Precision]:
        return self.chosen or self.order[self.calls]

    @property
    def timing(self) -> bool:
        return self.chosen is None

    def timed(self, seconds: float, windows: int) -> None:
        """The current candidate ran a batch of ``windows`` in ``seconds``."""
        if self.chosen is not None:
            return
        index = self.candidates.index(self.order[self.calls])
        if self.calls >= len(self.candidates):                         # warm-up batches are not timed
            self.times[index] = min(self.times.get(index, float("inf")), seconds / max(windows, 1))
        self.calls += 1
        if self.calls == len(self.order):
            best = min(self.times, key=self.times.get)
            self.chosen = self.candidates[best]
            log.info("Network on this machine: " + ", ".join(
                f"{f} {p.name} {1000 * self.times[i]:.2f} ms" for i, (f, p) in enumerate(self.candidates))
                     + f" per window -> {self.chosen[0]}, {self.chosen[1].name}")
            reduced = [c for c in self.candidates if c[1].dtype is not None]
            if reduced and self.chosen[1].dtype is None:
                log.info(f"--amp: {reduced[0][1].name} is not faster than float32 here; the run stays float32")


@dataclass
class Disagreement:
    """The sampled windows computed in both precisions, and how many were decided otherwise."""

    checked: int = 0
    differing: int = 0
    examples: List[str] = field(default_factory=list)

    def compare(self, batch, rule: DecisionRule, class_map: ClassMap, name: str) -> None:
        """Tally a batch's ``reference`` windows: the rule's decision (class or none, and
        the unknown flag of a detection) in reduced precision against float32."""
        reference = batch.reference
        if reference is None:
            return
        for k, row in enumerate(reference.rows):
            low = decision(rule, class_map, batch.probs[row], batch.unknown[row] if batch.unknown else False)
            full = decision(rule, class_map, reference.probs[k], reference.unknown[k] if reference.unknown else False)
            self.checked += 1
            if low != full:
                self.differing += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{name} {batch.starts[row]:.3f} s")

    def report(self) -> Optional[str]:
        if not self.checked:
            return None
        low, high = wilson(self.differing, self.checked)
        share = self.differing / self.checked
        text = (f"--amp: {self.differing} of {self.checked} sampled windows (1 in {CHECK_EVERY}, computed in "
                f"float32 too) decided otherwise than float32: {100 * share:.2f} % [95 % interval "
                f"{100 * low:.2f}-{100 * high:.2f} %]")
        if self.examples:
            text += "; e.g. " + ", ".join(self.examples)
        return text


def decision(rule: DecisionRule, class_map: ClassMap, probs, unknown: bool) -> Tuple[Optional[int], bool]:
    label = rule.decide([float(p) for p in probs], class_map)
    return label, bool(unknown) and label is not None
