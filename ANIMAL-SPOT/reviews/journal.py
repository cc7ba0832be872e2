"""The review's journal and what an answer means: the one place that says it.

``review_journal.jsonl`` is the only state of a review: one JSON line per answer, undo or
queued item, appended and synced to disk before the answer is acknowledged; reading skips
(and reports) lines that are not JSON objects, keeping every other line.

Answers: ``correct`` (the unit holds a call of the model's label), ``wrong`` (no call:
noise), ``other`` (a call of the class the reviewer names), ``unsure`` and ``skip`` (no
answer: left out of every figure, assumed missing at random within their stratum).
``called(entry)`` is the class an answer says the unit holds; a label or comment is one
line of printable text (it ends up in a tab-separated table and in training clips' names).
"""

import json
import os
import time
from typing import Dict, List, Optional, Tuple

from .units import ReviewError

DECISIONS = ("correct", "wrong", "other", "unsure", "skip")
USABLE = ("correct", "wrong", "other")
VERIFIED = {"correct": "yes", "other": "yes", "wrong": "no", "unsure": "unsure"}
NOISE = "noise"
LIMIT = 200


def clean_text(text: Optional[str], what: str) -> str:
    """``text`` stripped, refused (``ReviewError``) where it is not one line of printable
    text (a tab, a newline, a control character) or is longer than ``LIMIT``."""
    text = (text or "").strip()
    if any(not c.isprintable() for c in text):
        raise ReviewError(f"the {what} must be one line of text without tabs or control characters: {text[:40]!r}")
    if len(text) > LIMIT:
        raise ReviewError(f"the {what} is longer than {LIMIT} characters")
    return text


def called(entry: dict) -> Optional[str]:
    """The class a decision says its unit holds (``noise`` for ``wrong``), or None (no
    answer). Journals of every version read the same way: by the decision, not by the
    stored label."""
    decision = entry.get("decision")
    if decision == "correct":
        return entry.get("model_label") or entry.get("label")
    if decision == "other":
        return entry.get("label")
    if decision == "wrong":
        return NOISE
    return None


def decision_entry(unit, decision: str, label: Optional[str] = None, comment: str = "", client: str = "") -> dict:
    """The journal line of an answer (its ``label``: the class it says the unit holds)."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    label = clean_text(label, "label")
    if decision == "other" and not label:
        raise ReviewError("an 'other' answer needs the label of the other class")
    entry = {"type": "decision", "item": unit.id, "decision": decision, "label": "",
             "comment": clean_text(comment, "comment"), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "client": client, "recording": unit.recording, "begin": unit.begin, "end": unit.end,
             "channel": unit.channel, "class": unit.cls, "stratum": unit.stratum, "inclusion": unit.inclusion,
             "how": unit.how, "model_label": unit.label, "score": unit.score}
    entry["label"] = label if decision == "other" else (called(entry) or "")
    return entry


class Journal:
    """``review_journal.jsonl``: append-only, one JSON object per line, each line flushed
    and synced before ``append`` returns."""

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


def final_answers(entries: List[dict]) -> Dict[str, dict]:
    """item -> its answer in force (undo takes the answer back)."""
    answers: Dict[str, dict] = {}
    for entry in entries:
        if entry.get("type") == "undo":
            answers.pop(entry["item"], None)
        elif entry.get("type") == "decision":
            answers.pop(entry["item"], None)
            answers[entry["item"]] = entry
    return answers


def journal_selections(path: str) -> Dict[str, List[Tuple[float, float, str]]]:
    """recording -> ``[(begin, end, class)]`` of a journal's answers in force (the
    examples ``embed.py fit`` learns from)."""
    out: Dict[str, List[Tuple[float, float, str]]] = {}
    for entry in final_answers(Journal(path).read()).values():
        label = called(entry)
        if label:
            out.setdefault(entry["recording"], []).append((float(entry["begin"]), float(entry["end"]), label))
    return out
