"""What an embedding store adds to a review (``review.py --store STORE``): "more like
this" and active learning. Both reach the review only through its session's narrow
interface: ``labelled()`` (the answers as selections), ``covered()`` and
``queue_found()`` (stretches to review before the rest of the sample, never counted by
the estimators).

Active learning (``--active``): after every ``BATCH`` answers a head is refitted on the
embeddings of every answered stretch (``embedding.heads``), validated on held-out
recordings, and the next ``BATCH`` items are chosen from the whole store: the windows
whose two most probable classes are closest (uncertainty), at most one per ``SPACING``
seconds of a recording (diversity), taken in turn from each class the head predicts
(balance); they are queued with ``how: active``.
"""

import logging
import os
import threading
from typing import Dict, List, Tuple

import numpy as np
import torch

from . import heads
from .classify import StoredSource
from .search import search, stored_stretch
from .store import Store
from ..evaluation.metrics import PassMetrics

log = logging.getLogger("REVIEW")
BATCH = 10
SPACING = 60.0


def key_of(recording: str) -> str:
    """A stored recording (path below --input_file) as the review names it (no extension)."""
    return os.path.splitext(recording)[0]


def more_like_this(session, store: Store, item: str, top: int = 10) -> int:
    """Queue up to ``top`` stored stretches most like the item's; returns how many were new."""
    recording, begin, end, cls = session.stretch(item)
    vector, exclude = stored_stretch(store, recording, begin, end)
    found = [{"recording": key_of(hit.recording), "begin": hit.begin, "end": hit.end, "cls": cls,
              "score": hit.similarity, "channel": hit.channel}
             for hit in search(store, vector, top, exclude)
             if not session.covered(key_of(hit.recording), hit.begin, hit.end)]
    return session.queue_found(found, "search")


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
    def __init__(self, session, store: Store):
        self.session, self.store = session, store
        self.since = 0
        self.text = "active learning: no head fitted yet"
        self.due = False
        self.lock = threading.Lock()

    def status(self) -> str:
        """The last fit's account, and what comes next (it changes with every answer)."""
        if self.lock.locked() or self.due:
            return f"{self.text} · fitting a new head on the latest answers ..."
        return f"{self.text} · next head after {BATCH - self.since} more answer(s)"

    def answered(self) -> None:
        self.since += 1
        if self.since >= BATCH:
            self.since, self.due = 0, True             # "fitting" from now on, before the thread takes the lock
            threading.Thread(target=self.refit, daemon=True).start()

    def refit(self, wait: bool = False) -> None:
        """Refit and queue the next batch (``wait``: after a refit that is running)."""
        if not self.lock.acquire(blocking=wait):
            return                                   # a refit is running; the next batch will refit again
        try:
            self.due = False
            self._refit()
        except Exception as error:                   # the page goes on without new items
            self.text = f"active learning: the head could not be fitted ({error})"
            log.warning(self.text)
        finally:
            self.lock.release()

    def _refit(self) -> None:
        examples = heads.store_examples(self.store, self.session.labelled(), noise_elsewhere=False)
        names = sorted(set(examples.labels))
        if len(names) < 2:
            self.text = f"active learning: answers of two classes are needed (so far: {', '.join(names) or 'none'})"
            return
        index = {n: i for i, n in enumerate(names)}
        y = np.asarray([index[label] for label in examples.labels])
        head = heads.fit_head(examples.vectors, y, len(names), epochs=100)
        figures = self.validation(examples, y, names)
        counts = ", ".join(f"{n} {int((y == i).sum())}" for i, n in enumerate(names))
        self.text = f"active learning: head fitted on {len(y)} windows ({counts}); {figures}"
        self.session.queue_found(self.next_stretches(head, names), "active")

    def validation(self, examples, y, names) -> str:
        val = heads.validation_split(examples, 0)
        if val.all() or not val.any():
            return "too few recordings for a validation"
        head = heads.fit_head(examples.vectors[~val], y[~val], len(names), epochs=100)
        metrics = PassMetrics(len(names))
        metrics.update(torch.from_numpy(y[val]), torch.from_numpy(heads.logits_of(head, examples.vectors[val])
                                                                  .argmax(axis=1)))
        return "validation on held-out recordings: " + "; ".join(metrics.table(names)[:len(names)])

    def next_stretches(self, head, names: List[str]) -> List[dict]:
        candidates = []
        noise = names.index(heads.NOISE) if heads.NOISE in names else None
        source = StoredSource(self.store, head)
        for part in self.store.parts():
            key = key_of(part.recording)
            probs = source.probabilities(part.vectors).numpy()
            top2 = np.sort(probs, axis=1)[:, -2:]
            uncertainty = 1.0 - (top2[:, 1] - top2[:, 0])
            calls = probs.copy()
            if noise is not None:
                calls[:, noise] = -1
            best = calls.argmax(axis=1)
            for i in np.argsort(-uncertainty)[:200]:
                if not self.session.covered(key, float(part.starts[i]), float(part.ends[i])):
                    candidates.append((float(uncertainty[i]), key, float(part.starts[i]), float(part.ends[i]),
                                       names[int(best[i])], float(probs[i, best[i]])))
        return [{"recording": key, "begin": begin, "end": end, "cls": cls, "score": p, "channel": 1}
                for _, key, begin, end, cls, p in choose(candidates, BATCH)]

