"""A review session: the units, the plan, the answers (rebuilt from the journal), which
unit comes next, and the review's tables and summary. Safe for several browser tabs.

Besides the planned sample, a session takes units found by a search or chosen by an
active learner (``queue_found``); they are reviewed first and never counted by the
estimators. ``labelled`` and ``covered`` are what those helpers read: the embedding room
reaches the review only through these three methods.
"""

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .journal import Journal, called, decision_entry, final_answers
from .sampling import build_plan
from .summary import season_summary
from .tables import table_text
from .units import Loaded, ReviewError, Unit, find_recording, unit_id
from ..utils.atomic import atomic_write_text
from ..utils.paths import below

log = logging.getLogger("REVIEW")
JOURNAL, SUMMARY, TABLES = "review_journal.jsonl", "review_summary.json", "tables"
LEASE_SECONDS = 120


class ReviewSession:
    def __init__(self, loaded: Loaded, out: str, per_class: int = 30, bins: int = 4, seed: int = 0,
                 target_precision: Optional[float] = None, class_names: Optional[Sequence[str]] = None,
                 freq_range: Tuple = ("", ""), recordings: Optional[str] = None):
        self.units = {u.id: u for u in loaded.units}
        self.seconds, self.sources, self.out = loaded.seconds, loaded.sources, out
        self.recordings = recordings                  # where queued units' audio is found
        self.freq_range = freq_range                  # Low / High Freq (Hz) of the tables
        self.target_precision = target_precision
        self.plans = build_plan(loaded.units, per_class, bins, seed, loaded.all_logs)
        self.class_names = list(class_names or []) or sorted({u.cls for u in loaded.units} - {"unknown"})
        self.extra: List[str] = []                    # search / active-learning items, in the order queued
        self.answers: "OrderedDict[str, dict]" = OrderedDict()
        self.leases: Dict[str, Tuple[str, float]] = {}
        self.lock = threading.RLock()
        self.journal = Journal(os.path.join(out, JOURNAL))
        entries = self.journal.read()
        self.plan_settings = {"per_class": per_class, "bins": bins, "seed": seed}
        check_plan(self.journal.path, entries, self.units, self.plan_settings)
        for entry in entries:
            self._apply(entry)
        for problem in self.journal.problems:
            log.warning(problem)

    # ---------------------------------------------------------------- answers
    def _apply(self, entry: dict) -> None:
        item = entry["item"]
        if entry.get("type") == "undo":
            self.answers.pop(item, None)
        elif entry.get("type") == "queued":
            if item not in self.units and "recording" in entry:      # found by a search or the learner
                self.units[item] = Unit(item, entry["recording"], entry["path"], entry["begin"], entry["end"],
                                        entry["label"], entry.get("score"), entry["class"], False,
                                        entry.get("channel", 1), [], f"{entry['class']}|{entry['how']}", None,
                                        entry["how"])
            if item in self.units and item not in self.extra:
                self.units[item].how = entry.get("how", "search")
                self.extra.append(item)
        elif item in self.units:
            self.answers.pop(item, None)
            self.answers[item] = entry

    def decide(self, item: str, decision: str, label: Optional[str] = None, comment: str = "",
               client: str = "") -> dict:
        """Record an answer (on disk before this returns); the review's table of that
        recording is rewritten."""
        with self.lock:
            if item not in self.units:
                raise ReviewError(f"unknown item {item!r}")
            unit = self.units[item]
            entry = dict(decision_entry(unit, decision, label, comment, client), plan=self.plan_settings)
            self.journal.append(entry)
            self._apply(entry)
            self.leases.pop(item, None)
            self.write_table(unit.recording)
            return entry

    def undo(self, client: str = "") -> Optional[dict]:
        """Take back the newest answer (of this client when it gave one)."""
        with self.lock:
            mine = [e for e in self.answers.values() if not client or e.get("client") == client]
            if not mine:
                return None
            last = mine[-1]
            entry = {"type": "undo", "item": last["item"], "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "client": client}
            self.journal.append(entry)
            self._apply(entry)
            self.write_table(self.units[last["item"]].recording)
            return last

    # ------------------------------------------------- what helpers read and add
    def queue_found(self, found: Iterable[dict], how: str) -> int:
        """Queue stretches found by a search or an active learner (dicts of ``recording``
        (below --recordings, without extension), ``begin``, ``end``, ``cls``, ``score``,
        ``channel``) before the rest of the sample; the estimators never count them. The
        journal keeps each whole, so a restarted review knows them. Returns how many were new."""
        added = 0
        with self.lock:
            for item in found:
                entry = queued_entry(item, how, self.recordings)
                known = self.units.get(entry["item"]) if entry else None
                if entry is None or (known is not None and (known.inclusion is not None or entry["item"] in
                                                            self.answers or entry["item"] in self.extra)):
                    continue
                self.journal.append(entry)
                self._apply(entry)
                added += 1
        return added

    def covered(self, recording: str, begin: float, end: float) -> bool:
        """Whether an answered or queued unit already overlaps this stretch."""
        with self.lock:
            for item in list(self.answers) + self.extra:
                unit = self.units[item]
                if unit.recording == recording and unit.begin < end and begin < unit.end:
                    return True
        return False

    def labelled(self) -> Dict[str, List[Tuple[float, float, str]]]:
        """recording -> ``[(begin, end, class)]`` of every answered unit (noise for ``wrong``)."""
        selections: Dict[str, List[Tuple[float, float, str]]] = {}
        with self.lock:
            for item, answer in self.answers.items():
                unit, label = self.units[item], called(answer)
                if label:
                    selections.setdefault(unit.recording, []).append((unit.begin, unit.end, label))
        return selections

    def stretch(self, item: str) -> Tuple[str, float, float, str]:
        """``(recording, begin, end, class)`` of an item."""
        if item not in self.units:
            raise ReviewError(f"unknown item {item!r}")
        unit = self.units[item]
        return unit.recording, unit.begin, unit.end, unit.cls

    # ------------------------------------------------------------------ next
    def next(self, cls: Optional[str] = None, client: str = "") -> Optional[Unit]:
        """The next unanswered unit: the searched/active ones first, then the planned
        sample (of ``cls``, else of the class reviewed least so far). A unit handed to one
        tab is not handed to another for ``LEASE_SECONDS`` unless nothing else is left."""
        with self.lock:
            now = time.time()
            candidates = [i for i in self.extra if i not in self.answers and
                          (cls is None or self.units[i].cls == cls)]
            plans = [self.plans[cls]] if cls in self.plans else (list(self.plans.values()) if cls is None else [])
            plans.sort(key=lambda p: (self.progress(p.name)[0] / max(1, len(p.queue)), p.name))
            for plan in plans:
                candidates += [i for i in plan.queue if i not in self.answers]
            if not candidates:
                return None
            mine = [i for i in candidates if self.leases.get(i, ("", 0))[0] == client and client]
            free = [i for i in candidates if i not in self.leases or now - self.leases[i][1] > LEASE_SECONDS]
            chosen = (mine or free or candidates)[0]
            if client:
                self.leases[chosen] = (client, now)
            return self.units[chosen]

    def progress(self, cls: str) -> Tuple[int, int]:
        plan = self.plans.get(cls)
        if plan is None:
            return 0, 0
        return sum(1 for i in plan.queue if i in self.answers), len(plan.queue)

    # ---------------------------------------------------------- tables, summary
    def table_path(self, recording: str) -> str:
        return below(os.path.join(self.out, TABLES), recording + ".Table.1.selections.txt")

    def write_table(self, recording: str) -> None:
        units = [u for u in self.units.values() if u.recording == recording]
        atomic_write_text(self.table_path(recording), table_text(units, self.answers, self.freq_range))

    def write_all_tables(self) -> None:
        for recording in sorted({u.recording for u in self.units.values()}):
            self.write_table(recording)

    def summary(self) -> dict:
        with self.lock:
            return season_summary(self)

    def write_summary(self) -> dict:
        summary = self.summary()
        atomic_write_text(os.path.join(self.out, SUMMARY), json.dumps(summary, indent=1))
        return summary


def check_plan(path: str, entries: List[dict], units: Dict[str, Unit], settings: dict) -> None:
    """A journal's answers count only under the plan they were drawn by (their strata and
    inclusion probabilities): each answer names its plan's settings, and a review reopened
    with others is refused. Answers from before they did are accepted where each sampled
    one is a unit of this plan's sample, in the same stratum."""
    answers = list(final_answers(entries).values())
    earlier = next((e["plan"] for e in answers if isinstance(e.get("plan"), dict)), None)
    if earlier is not None:
        changed = [key for key in settings if earlier.get(key) != settings[key]]
        if changed:
            was = " ".join(f"--{k} {earlier.get(k)}" for k in settings)
            raise ReviewError(f"{path}: this review was started with {was}; with other settings "
                              f"({', '.join('--' + k for k in changed)}) its answers would fall outside the plan they "
                              f"were drawn by. Reopen it with {was}, or start a new review in another --out")
    lost = [e for e in answers if e.get("how", "random") == "random" and e["item"] not in units]
    if lost:
        log.warning(f"{path}: {len(lost)} answer(s) are of units no longer in --predictions (the predictions or their "
                    "event settings changed since): they are not counted")
    stray = [e for e in answers if e.get("how", "random") == "random" and "plan" not in e and e["item"] in units
             and (units[e["item"]].inclusion is None or units[e["item"]].stratum != e.get("stratum"))]
    if stray:
        raise ReviewError(f"{path}: {len(stray)} of its answers were drawn by another plan than "
                          + " ".join(f"--{k} {v}" for k, v in settings.items())
                          + "; reopen it with the --seed, --bins and --per_class it was started with")


def queued_entry(item: dict, how: str, recordings: Optional[str]) -> Optional[dict]:
    """The journal line of a found stretch (None where its recording is not found)."""
    key, channel = item["recording"], int(item.get("channel", 1))
    path = find_recording(recordings, key) if recordings else None
    if path is None:
        return None
    begin, end = round(float(item["begin"]), 3), round(float(item["end"]), 3)
    score = None if item.get("score") is None else round(float(item["score"]), 4)
    return {"type": "queued", "item": unit_id(key, begin, end, item["cls"], False, channel), "how": how,
            "recording": key, "path": path, "begin": begin, "end": end, "label": item["cls"], "score": score,
            "class": item["cls"], "channel": channel, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
