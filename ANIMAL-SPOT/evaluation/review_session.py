"""A review of a prediction folder: what there is to review, in which order, what the
reviewer answered, and what follows from it (the review's tables and its summary).

Sources (per recording of ``--predictions``): the prediction log wins (it holds every
window's probabilities and the run's decision); else the recording's Raven table (this
project's, the original's ``*.annotation.result.txt``, or any selection table with a
label column). A ``combined`` table is used only for recordings without a table or log
of their own, so nothing is counted twice. A source ``<sub>/<name>...`` belongs to the
recording ``<sub>/<name>.<ext>`` below ``--recordings``.

Units: the detections (touching detection windows of one label merged, as the tables
merge them; score = the highest probability) and, from logs, the windows below the
threshold, each under the call type it most resembles (noise aside), not overlapping a
detection, thinned to windows that do not overlap each other. Per class, the detections
are split into ``bins`` score strata (quantiles) plus the below-threshold stratum; each
stratum's units are drawn in a random order fixed by the seed, and the review takes them
round-robin over the strata, so any prefix is a stratified random sample. Each unit's
inclusion probability (planned reviews / stratum size) is recorded.

The journal (``review_journal.jsonl``) is the only state: one line per answer or undo,
appended and flushed to disk before the answer is acknowledged. Estimators
(``evaluation.review``) use only the randomly sampled units.
"""

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from evaluation import review as est
from evaluation.raven import HEADER_COLUMNS, format_score, read_rows, tsv
from evaluation.log_format import LogFormatError, log_windows, parse_log
from utils.atomic import atomic_write_text

log = logging.getLogger("REVIEW")
AUDIO_EXTENSIONS = (".wav", ".flac", ".WAV", ".FLAC", ".Wav")
LABEL_COLUMNS = ("sound type", "label", "class", "species", "call type", "annotation")
DECISIONS = ("correct", "wrong", "other", "unsure", "skip")
JOURNAL, SUMMARY, TABLES = "review_journal.jsonl", "review_summary.json", "tables"
LEASE_SECONDS = 120


class ReviewError(ValueError):
    """Bad input for a review; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------- units
@dataclass
class Unit:
    id: str
    recording: str                       # path below --recordings
    path: str                            # the recording file
    begin: float
    end: float
    label: str                           # the model's label (a class, or "unknown")
    score: Optional[float]
    cls: str                             # whose strata it belongs to
    above: bool                          # a detection (True) or a window below the threshold
    channel: int = 1
    alternatives: List[Tuple[str, float]] = field(default_factory=list)
    stratum: str = ""
    inclusion: Optional[float] = None    # planned reviews / stratum size (random units)
    how: str = "random"                  # random | search | active

    def public(self) -> dict:
        return {"item": self.id, "recording": self.recording, "begin": self.begin, "end": self.end,
                "label": self.label, "score": self.score, "channel": self.channel, "class": self.cls,
                "above_threshold": self.above, "alternatives": [[n, p] for n, p in self.alternatives],
                "stratum": self.stratum, "how": self.how}


def unit_id(recording: str, begin: float, end: float, cls: str, above: bool, channel: int) -> str:
    text = f"{recording}|{begin}|{end}|{cls}|{int(above)}|{channel}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _stem_key(relative: str) -> str:
    """``sub/rec_predict_output.log`` / ``sub/rec.Table.1.selections.txt`` -> ``sub/rec``."""
    folder, name = os.path.split(relative)
    if "_predict_output" in name:
        name = re.sub(r"_ch\d+$", "", name.split("_predict_output", 1)[0])
    else:
        name = name.split(".", 1)[0]
    return os.path.join(folder, name) if folder else name


def find_sources(predictions: str) -> Dict[str, Tuple[str, List[str]]]:
    """recording key -> (kind, paths): ``log`` (one per channel), ``table``, ``result``,
    ``other`` table; and the ``combined`` tables under the key ``""``."""
    if not os.path.isdir(predictions):
        raise ReviewError(f"--predictions {predictions}: no such folder")
    rank = {"log": 0, "table": 1, "result": 2, "other": 3}
    found: Dict[str, Tuple[str, List[str]]] = {}
    combined: List[str] = []
    for root, dirs, files in os.walk(predictions):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            relative = os.path.relpath(path, predictions)
            if name.startswith("combined.") and name.endswith(".selections.txt"):
                combined.append(path)
                continue
            if "_predict_output" in name and name.endswith(".log"):
                kind = "log"
            elif name.endswith(".annotation.result.txt"):
                kind = "result"
            elif name.endswith(".Table.1.selections.txt"):
                kind = "table"
            elif name.endswith(".selections.txt") or name.endswith(".txt") and "selections" in name.lower():
                kind = "other"
            else:
                continue
            key = _stem_key(relative)
            if key not in found or rank[kind] < rank[found[key][0]]:
                found[key] = (kind, [path])
            elif kind == found[key][0] == "log":
                found[key][1].append(path)
    if combined:
        found[""] = ("combined", combined)
    if not found:
        raise ReviewError(f"--predictions {predictions}: no prediction logs or selection tables")
    return found


def find_recording(recordings: str, key: str) -> Optional[str]:
    for ext in AUDIO_EXTENSIONS:
        path = os.path.join(recordings, key + ext)
        if os.path.isfile(path):
            return path
    return None


def _merge(windows, label_of):
    """Detection windows -> events ``[begin, end, label, score, probs]`` by the tables' rule."""
    events = []
    for start, end, probs, label, score in windows:
        start, end = round(start, 3), round(end, 3)
        if events and round(events[-1][1], 3) >= start:
            last = events[-1]
            if last[2] == label:
                last[1] = end
                if score > last[3]:
                    last[3], last[4] = score, probs
                continue
            events.append([last[1], end, label, score, probs])
            continue
        events.append([start, end, label, score, probs])
    return events


def log_units(paths: Sequence[str], key: str, recording: str) -> List[Unit]:
    """Detections and below-threshold windows of a recording's log(s)."""
    units = []
    for path in sorted(paths):
        match = re.search(r"_ch(\d+)_predict_output", os.path.basename(path))
        channel = int(match.group(1)) if match else 1
        try:
            parsed = parse_log(path)
        except (LogFormatError, OSError) as error:
            raise ReviewError(str(error)) from None
        names = parsed.class_map.names
        noise = parsed.class_map.noise_index
        binary = parsed.class_map.is_binary
        starts, ends, probs, unknown = log_windows(parsed)
        flags = [r.flag for r in parsed.windows.values()]
        detections, rest = [], []
        for i in range(len(starts)):
            row = probs[i]
            top = int(np.argmax(row))
            detected = flags[i] == 1 and (binary or unknown[i] or top != noise)
            if detected:
                label = "unknown" if unknown[i] else names[1 if binary else top]
                detections.append((starts[i], ends[i], row, label, float(row[1] if binary else row[top])))
            else:
                calls = [c for c in range(len(names)) if c != noise]
                best = max(calls, key=lambda c: row[c]) if calls else top
                rest.append((starts[i], ends[i], row, names[best], float(row[best])))
        events = _merge(detections, None)
        for begin, end, label, score, row in events:
            units.append(Unit(unit_id(key, begin, end, label, True, channel), key, recording, begin, end, label, score,
                              label, True, channel, alternatives(row, names, label)))
        last_end: Dict[str, float] = {}
        for start, end, row, cls, score in rest:
            if any(e[0] < end and start < e[1] for e in events):
                continue                    # part of a detected call
            if start < last_end.get(cls, -1.0):
                continue                    # overlaps the previous unit of its class
            last_end[cls] = end
            units.append(Unit(unit_id(key, start, end, cls, False, channel), key, recording, start, end, cls, score,
                              cls, False, channel, alternatives(row, names, cls)))
    return units


def alternatives(row, names: Sequence[str], label: str, count: int = 3) -> List[Tuple[str, float]]:
    order = np.argsort(-np.asarray(row))
    return [(names[i], round(float(row[i]), 4)) for i in order if names[i] != label][:count]


def table_units(path: str, key: str, recording: str, seconds: float) -> List[Unit]:
    """The selections of a Raven table as detections (noise rows left out)."""
    header, rows = read_rows(path, ReviewError)
    label_at = next((header[c] for c in LABEL_COLUMNS if c in header), None)
    missing = [c for c in ("begin time (s)", "end time (s)") if c not in header]
    if label_at is None:
        missing.append("a label column (" + ", ".join(repr(c) for c in LABEL_COLUMNS) + ")")
    if missing:
        raise ReviewError(f"{path}: no {', '.join(missing)}; columns: {', '.join(c for c in rows[0] if c.strip())}")
    units, seen = [], set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            begin, end = float(row[header["begin time (s)"]]), float(row[header["end time (s)"]])
            label = row[label_at].strip()
            score = float(row[header["score"]]) if "score" in header and row[header["score"]].strip() else None
            cell = row[header["channel"]].strip() if "channel" in header else ""
            channel = int(float(cell)) if cell else 1
        except (IndexError, ValueError):
            raise ReviewError(f"{path}:{number}: malformed row {row!r}") from None
        if label.lower() == "noise" or (begin, end, label, channel) in seen:
            continue
        seen.add((begin, end, label, channel))
        if end > seconds + 1e-3:
            raise ReviewError(f"{path}:{number}: the selection {begin:g}-{end:g} s ends after the recording "
                              f"{recording} ({seconds:g} s)")
        units.append(Unit(unit_id(key, begin, end, label, True, channel), key, recording, begin, end, label, score,
                          label, True, channel))
    return units


def combined_units(paths: Sequence[str], recordings: str, taken: set) -> Dict[str, List[Unit]]:
    """Rows of combined tables for recordings without a source of their own (by
    ``Begin Path``, else ``Begin File``)."""
    out: Dict[str, List[Unit]] = {}
    for path in paths:
        header, rows = read_rows(path, ReviewError, empty_ok=True)
        if not rows:
            continue
        label_at = next((header[c] for c in LABEL_COLUMNS if c in header), None)
        where = header.get("begin path", header.get("begin file"))
        if label_at is None or where is None or "file offset (s)" not in header:
            raise ReviewError(f"{path}: a combined table needs a label column, Begin Path or Begin File, and "
                              "File Offset (s)")
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            key = os.path.splitext(row[where].strip())[0]
            if key in taken:
                continue
            recording = find_recording(recordings, key)
            if recording is None:
                continue
            label = row[label_at].strip()
            if label.lower() == "noise":
                continue
            try:
                begin = float(row[header["file offset (s)"]])
                end = begin + float(row[header["end time (s)"]]) - float(row[header["begin time (s)"]])
                score = float(row[header["score"]]) if "score" in header and row[header["score"]].strip() else None
            except (IndexError, ValueError):
                raise ReviewError(f"{path}:{number}: malformed row {row!r}") from None
            out.setdefault(key, []).append(Unit(unit_id(key, begin, end, label, True, 1), key, recording, begin, end,
                                                label, score, label, True))
    return out


def load_units(predictions: str, recordings: str) -> Tuple[List[Unit], Dict[str, float], bool]:
    """Every unit of the folder, the seconds of each recording, and whether every
    recording had a log (else call densities are lower bounds)."""
    import soundfile as sf

    sources = find_sources(predictions)
    units: List[Unit] = []
    seconds: Dict[str, float] = {}
    missing = []
    all_logs = True
    for key, (kind, paths) in sorted(sources.items()):
        if kind == "combined":
            continue
        recording = find_recording(recordings, key)
        if recording is None:
            missing.append(f"{paths[0]} -> {os.path.join(recordings, key)}.wav (or .flac)")
            continue
        try:
            seconds[key] = sf.info(recording).duration
        except Exception as error:
            raise ReviewError(f"{recording}: cannot read audio ({error})") from None
        if kind == "log":
            units += log_units(paths, key, recording)
        else:
            all_logs = False
            units += table_units(paths[0], key, recording, seconds[key])
    if missing:
        raise ReviewError(f"{len(missing)} recording(s) of --predictions not found below --recordings "
                          f"{recordings}:\n  " + "\n  ".join(missing))
    if "" in sources:
        for key, extra in combined_units(sources[""][1], recordings, set(seconds)).items():
            all_logs = False
            seconds[key] = sf.info(extra[0].path).duration
            for unit in extra:
                if unit.end > seconds[key] + 1e-3:
                    raise ReviewError(f"{sources[''][1][0]}: the selection {unit.begin:g}-{unit.end:g} s ends after "
                                      f"the recording {unit.path} ({seconds[key]:g} s)")
            units += extra
    return units, seconds, all_logs


# ------------------------------------------------------------------------------ plan
@dataclass
class ClassPlan:
    name: str
    strata: List[est.Stratum]
    queue: List[str]                     # unit ids in review order
    members: Dict[str, List[str]]        # stratum -> all its unit ids


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
        groups: List[Tuple[str, List[Unit]]] = []
        scored = [u for u in above if u.score is not None]
        if len(scored) == len(above) and above:
            for b, index in enumerate(est.score_strata([u.score for u in above], bins), start=1):
                groups.append((f"{cls}|above|{b}", [above[i] for i in index]))
        elif above:
            groups.append((f"{cls}|above|1", above))
        if below or (below_seen and above):
            groups.append((f"{cls}|below", below))
        if not groups:
            continue
        planned = est.allocate(per_class, [len(g) for _, g in groups])
        strata, orders, members = [], [], {}
        for (name, group), n in zip(groups, planned):
            group = sorted(group, key=lambda u: (u.recording, u.channel, u.begin, u.end))
            if not group:
                strata.append(est.Stratum(name, 0, above=False))
                orders.append([])
                members[name] = []
                continue
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
            strata.append(est.Stratum(name, len(group), above=name.split("|")[1] == "above",
                                      low=min(scores) if scores else 0.0, high=max(scores) if scores else 1.0,
                                      recordings=counts))
            orders.append([u.id for u in order[:n]])
            members[name] = [u.id for u in group]
        turn = [o for o, s in zip(orders, strata) if s.above][::-1] + [o for o, s in zip(orders, strata) if not s.above]
        queue = [order[rank] for rank in range(max(len(o) for o in orders)) for order in turn if rank < len(order)]
        plans[cls] = ClassPlan(cls, strata, queue, members)
    return plans


# --------------------------------------------------------------------------- journal
class Journal:
    """``review_journal.jsonl``: append-only, one JSON object per line, each line flushed
    and synced before ``append`` returns. Reading skips (and reports) lines that are not
    JSON objects, keeping every other line."""

    def __init__(self, path: str):
        self.path = path
        self.problems: List[str] = []

    def read(self) -> List[dict]:
        if not os.path.isfile(self.path):
            return []
        entries = []
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    if not isinstance(entry, dict) or "item" not in entry:
                        raise ValueError("not an answer")
                except ValueError:
                    self.problems.append(f"{self.path}:{number}: not a journal line, skipped: {line.strip()[:80]!r}")
                    continue
                entries.append(entry)
        return entries

    def append(self, entry: dict) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":          # a line cut short by a crash: start a new one
                    handle.write(b"\n")
            handle.write((json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------- session
class ReviewSession:
    """The state of a review (rebuilt from the journal), safe for several browser tabs."""

    def __init__(self, units: List[Unit], seconds: Dict[str, float], all_logs: bool, out: str, per_class: int = 30,
                 bins: int = 4, seed: int = 0, target_precision: Optional[float] = None,
                 class_names: Optional[Sequence[str]] = None, freq_range: Tuple = ("", "")):
        self.units = {u.id: u for u in units}
        self.freq_range = freq_range               # Low / High Freq (Hz) of the tables
        self.seconds, self.all_logs, self.out = seconds, all_logs, out
        self.target_precision = target_precision
        self.plans = build_plan(units, per_class, bins, seed, all_logs)
        self.class_names = list(class_names or []) or sorted({u.cls for u in units} - {"unknown"})
        self.extra: List[str] = []                 # search / active-learning items, in the order queued
        self.answers: "OrderedDict[str, dict]" = OrderedDict()
        self.leases: Dict[str, Tuple[str, float]] = {}
        self.lock = threading.RLock()
        self.journal = Journal(os.path.join(out, JOURNAL))
        for entry in self.journal.read():
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
        if decision not in DECISIONS:
            raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        with self.lock:
            if item not in self.units:
                raise ReviewError(f"unknown item {item!r}")
            unit = self.units[item]
            if decision == "other" and not (label or "").strip():
                raise ReviewError("an 'other' answer needs the label of the other class")
            entry = {"type": "decision", "item": item, "decision": decision,
                     "label": (label or "").strip() if decision == "other" else unit.label,
                     "comment": comment or "", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "client": client,
                     "recording": unit.recording, "begin": unit.begin, "end": unit.end, "channel": unit.channel,
                     "class": unit.cls, "stratum": unit.stratum, "inclusion": unit.inclusion, "how": unit.how,
                     "model_label": unit.label, "score": unit.score}
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

    def queue(self, units: Sequence[Unit], how: str) -> int:
        """Add units (found by a search or chosen by the learner) to review before the rest
        of the planned sample; they are never counted by the estimators. The journal keeps
        each unit whole, so a restarted review knows them."""
        added = 0
        with self.lock:
            for unit in units:
                known = self.units.get(unit.id)
                if known is not None and (known.inclusion is not None or unit.id in self.answers
                                          or unit.id in self.extra):
                    continue
                entry = {"type": "queued", "item": unit.id, "how": how, "recording": unit.recording,
                         "path": unit.path, "begin": unit.begin, "end": unit.end, "label": unit.label,
                         "score": unit.score, "class": unit.cls, "channel": unit.channel,
                         "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                self.journal.append(entry)
                self._apply(entry)
                added += 1
        return added

    def covered(self, recording: str, begin: float, end: float) -> bool:
        """Whether an answered or queued unit already overlaps this stretch."""
        for item in list(self.answers) + self.extra:
            unit = self.units[item]
            if unit.recording == recording and unit.begin < end and begin < unit.end:
                return True
        return False

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

    # ---------------------------------------------------------------- tables
    def table_path(self, recording: str) -> str:
        return os.path.join(self.out, TABLES, recording + ".Table.1.selections.txt")

    def write_table(self, recording: str) -> None:
        """The recording's detections (and reviewed below-threshold units) with
        ``Verified`` and ``Reviewed label``."""
        atomic_write_text(self.table_path(recording), table_text(self, recording))

    def write_all_tables(self) -> None:
        for recording in sorted({u.recording for u in self.units.values()}):
            self.write_table(recording)

    # --------------------------------------------------------------- summary
    def summary(self) -> dict:
        return season_summary(self)

    def write_summary(self) -> dict:
        summary = self.summary()
        atomic_write_text(os.path.join(self.out, SUMMARY), json.dumps(summary, indent=1))
        return summary


# ------------------------------------------------------------------ tables and figures
def table_text(session, recording: str) -> str:
    """The recording's detections (and reviewed below-threshold units) with
    ``Verified`` and ``Reviewed label``."""
    units = [u for u in session.units.values() if u.recording == recording and (u.above or u.id in session.answers)]
    units.sort(key=lambda u: (u.begin, u.channel, u.end))
    columns = HEADER_COLUMNS + ["Score", "Verified", "Reviewed label"]
    rows = []
    for number, u in enumerate(units, start=1):
        answer = session.answers.get(u.id)
        verified, reviewed = "", ""
        comment = " "
        if answer is not None:
            decision = answer["decision"]
            verified = {"correct": "yes", "other": "yes", "wrong": "no", "unsure": "unsure"}.get(decision, "")
            reviewed = answer["label"] if decision == "other" else (u.label if decision == "correct" else "")
            comment = (answer.get("comment") or " ").replace("\t", " ").replace("\n", " ")
        if not u.above and not comment.strip():
            comment = "below threshold"
        rows.append([str(number), "Spectrogram_1", str(u.channel), str(u.begin), str(u.end),
                     str(session.freq_range[0]), str(session.freq_range[1]), u.label, comment, format_score(u.score),
                     verified, reviewed])
    return tsv(columns, rows)


def strata_counts(session, plan: ClassPlan, target: str) -> List[est.Stratum]:
    """The plan's strata with the random sample's answers counted: ``correct`` = the
    units that hold a call of ``target`` (a correct answer in ``target``'s own strata,
    or an 'other class' answer naming it)."""
    counted = []
    for stratum in plan.strata:
        members = set(plan.members[stratum.name])
        answers = [a for i, a in session.answers.items() if i in members and session.units[i].inclusion is not None
                   and a["decision"] in ("correct", "wrong", "other")]
        calls = sum(1 for a in answers if (a["decision"] == "correct" and plan.name == target) or
                    (a["decision"] == "other" and a["label"] == target))
        counted.append(est.Stratum(stratum.name, stratum.size, len(answers), calls, stratum.above,
                                   stratum.low, stratum.high, stratum.recordings))
    return counted


def class_summary(session, name: str, hours: float) -> dict:
    """Precision from the class's detections; recall and call density from every
    stratum (a call of this class may hide below the threshold of any class, or in
    another class's detections, where the reviewer names it)."""
    plan = session.plans[name]
    own = strata_counts(session, plan, name)
    above = [s for s in own if s.above]
    others = [s for other in session.plans.values() for s in strata_counts(session, other, name)
              if other.name != name or not s.above]
    seen_below = any(not s.above for s in others)
    p, p_ci = est.precision(above)
    r, r_ci = est.recall(above, others) if seen_below else (None, (None, None))
    everything = above + others
    d, d_ci = est.call_density(everything, hours)
    per_recording = OrderedDict()
    for recording in sorted(session.seconds):
        value, ci = est.call_density(everything, session.seconds[recording] / 3600, recording=recording)
        per_recording[recording] = {"call_density_per_hour": value, "call_density_ci95": list(ci)}
    return {"precision": p, "precision_ci95": list(p_ci), "recall": r, "recall_ci95": list(r_ci),
            "call_density_per_hour": d, "call_density_ci95": list(d_ci),
            "call_density_is_lower_bound": not session.all_logs, "per_recording": per_recording,
            "reviewed": sum(s.reviewed for s in own), "sampled": len(plan.queue),
            "answered": session.progress(name)[0], "detections": sum(s.size for s in above),
            "strata": [asdict(s) | {"share": s.share} for s in own]}


def season_summary(session) -> dict:
    with session.lock:
        hours = sum(session.seconds.values()) / 3600
        classes = OrderedDict()
        for name, plan in session.plans.items():
            entry = class_summary(session, name, hours)
            entry.update(threshold_figures(session, plan))
            entry["precision_curve"] = precision_curve(session, plan)
            classes[name] = entry
        return {"classes": classes, "hours": hours, "recordings": len(session.seconds),
                "target_precision": session.target_precision, "journal": os.path.join(session.out, JOURNAL),
                "estimators": "stratified; 95 % intervals from the finite-population posterior (Jeffreys prior); "
                              "only randomly sampled units count"}


def reviewed_arrays(session, plan: ClassPlan):
    """Scores, correctness, weights (stratum size / reviewed in it) and strata of the
    class's randomly sampled, answered units."""
    size = {s.name: s.size for s in plan.strata}
    usable = [(session.units[i], a) for i, a in session.answers.items() if session.units[i].cls == plan.name
              and session.units[i].inclusion is not None and a["decision"] in ("correct", "wrong", "other")]
    reviewed: Dict[str, int] = {}
    for unit, _ in usable:
        reviewed[unit.stratum] = reviewed.get(unit.stratum, 0) + 1
    scores = np.asarray([u.score if u.score is not None else 0.0 for u, _ in usable])
    correct = np.asarray([1.0 if a["decision"] == "correct" or a["label"] == plan.name else 0.0
                          for _, a in usable])
    weights = np.asarray([size[u.stratum] / reviewed[u.stratum] for u, _ in usable])
    return scores, correct, weights, np.asarray([u.stratum for u, _ in usable])


def threshold_figures(session, plan: ClassPlan) -> dict:
    if session.target_precision is None:
        return {"threshold_for_target_precision": None, "threshold_for_target_precision_ci95": [None, None]}
    scores, correct, weights, which = reviewed_arrays(session, plan)
    value = est.threshold_for_precision(scores, correct, weights, session.target_precision)
    interval = est.threshold_interval(scores, correct, weights, which, session.target_precision)
    return {"threshold_for_target_precision": value, "threshold_for_target_precision_ci95": list(interval)}


def precision_curve(session, plan: ClassPlan) -> List[List[float]]:
    scores, correct, weights, _ = reviewed_arrays(session, plan)
    if not len(scores):
        return []
    thresholds, values = est.weighted_precision_curve(scores, correct, weights)
    return [[float(t), float(v)] for t, v in zip(thresholds, values)]
