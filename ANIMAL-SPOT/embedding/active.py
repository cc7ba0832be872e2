"""Active learning through the review page (``review.py --store STORE --active``).

After every ``BATCH`` answers a head is refitted on the embeddings of every answered
stretch (``embedding.heads``), validated on held-out recordings, and the next ``BATCH``
items are chosen from the whole store: the windows whose two most probable classes are
closest (uncertainty), at most one per ``SPACING`` seconds of a recording (diversity),
taken in turn from each class the head predicts (balance). They are queued with
``how: active`` in the journal; the review's estimators never count them.
"""

import logging
import threading
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from embedding import heads
from embedding.store import Store
from evaluation.review_session import Unit, find_recording, unit_id

log = logging.getLogger("REVIEW")
BATCH = 10
SPACING = 60.0


def choose(candidates: List[Tuple[float, str, float, float, str, float]], count: int, spacing: float = SPACING
           ) -> List[Tuple[float, str, float, float, str, float]]:
    """``count`` candidates ``(uncertainty, recording, begin, end, class, probability)``:
    most uncertain first, classes in turn, none within ``spacing`` s of a chosen one of
    the same recording (the spacing shrinks when the recordings are too short for it)."""
    chosen: List = []
    for gap in (spacing, spacing / 4, spacing / 16, 0.0):
        by_class: Dict[str, List] = {}
        for candidate in sorted(candidates, key=lambda c: -c[0]):
            if candidate not in chosen:
                by_class.setdefault(candidate[4], []).append(candidate)
        queues = [by_class[c] for c in sorted(by_class)]
        while len(chosen) < count and any(queues):
            for queue in queues:
                while queue:
                    candidate = queue.pop(0)
                    if all(c[1] != candidate[1] or abs(c[2] - candidate[2]) >= max(gap, 1e-9) for c in chosen):
                        chosen.append(candidate)
                        break
                if len(chosen) == count:
                    break
        if len(chosen) == count:
            break
    return chosen


class ActiveLearner:
    def __init__(self, review):
        self.review = review
        self.store = Store.existing(review.args.store)
        self.since = 0
        self.text = f"active learning: the first head is fitted after {BATCH} answers"
        self.lock = threading.Lock()
        self.classes: Optional[List[str]] = None

    def status(self) -> str:
        return self.text

    def answered(self) -> None:
        self.since += 1
        if self.since >= BATCH:
            self.since = 0
            threading.Thread(target=self.refit, daemon=True).start()

    def labelled(self) -> Dict[str, List[Tuple[float, float, str]]]:
        session = self.review.session
        selections: Dict[str, List[Tuple[float, float, str]]] = {}
        with session.lock:
            for item, answer in session.answers.items():
                unit = session.units[item]
                label = {"correct": unit.label, "other": answer["label"], "wrong": heads.NOISE}.get(answer["decision"])
                if label:
                    selections.setdefault(unit.recording, []).append((unit.begin, unit.end, label))
        return selections

    def refit(self, wait: bool = False) -> None:
        """Refit and queue the next batch (``wait``: after a refit that is running)."""
        if not self.lock.acquire(blocking=wait):
            return                                   # a refit is running; the next batch will refit again
        try:
            self._refit()
        except Exception as error:                   # the page goes on without new items
            self.text = f"active learning: the head could not be fitted ({error})"
            log.warning(self.text)
        finally:
            self.lock.release()

    def _refit(self) -> None:
        examples = heads.store_examples(self.store, self.labelled(), noise_elsewhere=False)
        names = sorted(set(examples.labels))
        if len(names) < 2:
            self.text = f"active learning: answers of two classes are needed (so far: {', '.join(names) or 'none'})"
            return
        index = {n: i for i, n in enumerate(names)}
        y = np.asarray([index[l] for l in examples.labels])
        head = heads.fit_head(examples.vectors, y, len(names), epochs=100)
        figures = self.validation(examples, y, names)
        counts = ", ".join(f"{n} {int((y == i).sum())}" for i, n in enumerate(names))
        self.text = f"active learning: head fitted on {len(y)} windows ({counts}); {figures}"
        self.review.session.queue(self.next_units(head, names), "active")

    def validation(self, examples, y, names) -> str:
        from evaluation.metrics import PassMetrics

        val = heads.validation_split(examples, 0)
        if val.all() or not val.any():
            return "too few recordings for a validation"
        head = heads.fit_head(examples.vectors[~val], y[~val], len(names), epochs=100)
        metrics = PassMetrics(len(names))
        metrics.update(torch.from_numpy(y[val]), torch.from_numpy(heads.logits_of(head, examples.vectors[val])
                                                                  .argmax(axis=1)))
        return "validation on held-out recordings: " + "; ".join(metrics.table(names)[:len(names)])

    def next_units(self, head, names: List[str]) -> List[Unit]:
        session = self.review.session
        candidates = []
        noise = names.index(heads.NOISE) if heads.NOISE in names else None
        for part in self.store.parts():
            key = part.recording.rsplit(".", 1)[0]
            probs = torch.softmax(torch.from_numpy(heads.logits_of(head, np.asarray(part.vectors, np.float32))),
                                  dim=1).numpy()
            top2 = np.sort(probs, axis=1)[:, -2:]
            uncertainty = 1.0 - (top2[:, 1] - top2[:, 0])
            calls = probs.copy()
            if noise is not None:
                calls[:, noise] = -1
            best = calls.argmax(axis=1)
            for i in np.argsort(-uncertainty)[:200]:
                if not session.covered(key, float(part.starts[i]), float(part.ends[i])):
                    candidates.append((float(uncertainty[i]), key, float(part.starts[i]), float(part.ends[i]),
                                       names[int(best[i])], float(probs[i, best[i]])))
        units = []
        for _, key, begin, end, cls, p in choose(candidates, BATCH):
            path = find_recording(self.review.args.recordings, key)
            if path is None:
                continue
            units.append(Unit(unit_id(key, begin, end, cls, False, 1), key, path, round(begin, 3), round(end, 3), cls,
                              round(p, 4), cls, False, 1, [], f"{cls}|active", None, "active"))
        return units
