"""Training clips from data as users keep it, named as ANIMAL-SPOT expects
(``<out>/<CLASS>/<CLASS>-<SOURCE>_<ID>_<YEAR>_<TAPE>_<STARTMS>_<ENDMS>.wav``):

* ``from_folders``: one folder per class (BirdNET-Analyzer's training data): every audio
  file below ``<root>/<class>/`` is a clip of that class;
* ``from_table``: a label table (OpenSoundscape's): CSV rows of file, start, end and label
  (or one 0/1 column per class), cut from the recordings they name;
* ``from_raven``: Raven selection tables of long recordings (reviewed tables too).

Nothing is renamed or changed in place: clips are written below ``out``. TAPE keeps the
tape split honest: a clip's recording (or, for class folders, its sub-folder below the
class folder, else its own file), so clips of one recording never reach two partitions.
YEAR comes from the name where it carries one (an ANIMAL-SPOT ``_YEAR_TAPE`` pair, or a
date such as ``20240612``), else from ``--year``, else the file's modification year.
"""

import csv
import io
import logging
import os
import random
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from .audio_io import read_audio, recording_files
from ..evaluation.raven import (Event, TableError, events_by_recording, find_tables, read_rows, read_table,
                              recording_name)
from ..utils.atomic import atomic_write

log = logging.getLogger("ANIMAL-SPOT")
SEPARATORS = re.compile(r"[-_\s/\\.]")
DATE = re.compile(r"(?<!\d)(19[5-9]\d|2[01]\d\d)-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")
FILE_COLUMNS = ("file", "path", "filename", "file_name", "recording", "begin path", "begin file")
START_COLUMNS = ("start", "start_time", "begin", "begin_time", "begin time (s)", "start (s)", "offset")
END_COLUMNS = ("end", "end_time", "stop", "end time (s)", "end (s)")
LABEL_COLUMNS = ("label", "class", "species", "call type", "sound type", "annotation", "common_name")


def class_of(label: str) -> str:
    """A class name without the characters ANIMAL-SPOT uses as separators."""
    name = SEPARATORS.sub("", label)
    if not name:
        raise TableError(f"label {label!r} leaves no class name once separators are removed")
    return name


def year_and_tape(path: str, year: Optional[str] = None, tape: Optional[str] = None) -> Tuple[str, str]:
    """YEAR and TAPE of a recording (see the module's notes)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    fields = stem.split("_")
    for i, value in enumerate(fields[:-1]):
        if value.isdigit() and 1950 <= int(value) <= 2199 and fields[i + 1]:
            return value, SEPARATORS.sub("", fields[i + 1]) or "TAPE"
    dated = DATE.search(stem)
    if year:
        found_year = str(year)
    elif dated:
        found_year = dated.group(1)
    else:
        found_year = time.strftime("%Y", time.localtime(os.path.getmtime(path)))
    return found_year, SEPARATORS.sub("", str(tape or stem)) or "TAPE"


def clip_name(cls: str, source: str, number: int, year: str, tape: str, begin: float, end: float) -> str:
    return f"{cls}-{source}_{number:05d}_{clip_rest(year, tape, begin, end)}"


def clip_rest(year: str, tape: str, begin: float, end: float) -> str:
    """A clip's name after its number."""
    return f"{year}_{tape}_{int(round(begin * 1000))}_{int(round(end * 1000))}.wav"


def clip_bytes(data: np.ndarray, rate: int) -> bytes:
    """The clip as a WAV file (16-bit, or 32-bit float where the recording is)."""
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype="PCM_16" if data.dtype != np.float32 else "FLOAT")
    return buffer.getvalue()


def same_sound(path: str, content: bytes) -> bool:
    """Whether the WAV file ``path`` holds the samples (and rate) of the WAV ``content``. Not
    its bytes: libsndfile stamps the time into float files (their PEAK chunk)."""
    try:
        theirs, their_rate = sf.read(path, dtype="float64", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError):
        return False
    ours, our_rate = sf.read(io.BytesIO(content), dtype="float64", always_2d=True)
    return their_rate == our_rate and np.array_equal(theirs, ours)


class Writer:
    """Writes clips below ``out`` with running numbers (the clip IDs); remembers what it wrote.
    A clip ``out`` holds already (the same class, source, year, tape and times, the same
    samples, under any number) keeps its name and is not written again, and new clips number
    on after the highest there: a rerun, or one with more recordings, adds only what is new."""

    def __init__(self, out: str, source: str):
        self.out, self.source, self.written = out, source, []
        self.number = 0
        self.known: Dict[str, Dict[str, List[str]]] = {}        # class -> name without its number -> names

    def existing(self, cls: str) -> Dict[str, List[str]]:
        if cls not in self.known:
            pattern = re.compile(rf"^{re.escape(cls)}-{re.escape(self.source)}_(\d+)_(.+)$")
            folder = os.path.join(self.out, cls)
            found: Dict[str, List[str]] = {}
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
                match = pattern.match(name)
                if match:
                    found.setdefault(match.group(2), []).append(name)
                    self.number = max(self.number, int(match.group(1)))
            self.known[cls] = found
        return self.known[cls]

    def add(self, cls: str, data: np.ndarray, rate: int, year: str, tape: str, begin: float, end: float) -> None:
        content = clip_bytes(data, rate)
        for name in self.existing(cls).get(clip_rest(year, tape, begin, end), []):
            if same_sound(os.path.join(self.out, cls, name), content):
                self.written.append(os.path.join(cls, name))
                return
        self.number += 1
        name = clip_name(cls, self.source, self.number, year, tape, begin, end)
        with atomic_write(os.path.join(self.out, cls, name), "wb", durable=False) as handle:
            handle.write(content)
        self.written.append(os.path.join(cls, name))


def cut(data: np.ndarray, rate: int, begin: float, end: float) -> Optional[np.ndarray]:
    first, last = int(round(begin * rate)), min(len(data), int(round(end * rate)))
    return data[first:last] if last > first else None


# --------------------------------------------------------------------- class folders
def from_folders(root: str, out: str, year: Optional[str] = None) -> List[str]:
    """Every audio file below ``root/<class>/`` as a clip of ``<class>``."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise ValueError(f"--folders {root}: no class folders in it (one sub-folder per class, audio files inside)")
    writer = Writer(out, "folder")
    for folder in classes:
        cls = class_of(folder)
        files = recording_files(os.path.join(root, folder))
        if not files:
            log.warning(f"{os.path.join(root, folder)}: no audio files; class {cls} left out")
        for path in files:
            data, rate = read_audio(path)
            below = os.path.relpath(os.path.dirname(path), os.path.join(root, folder))
            clip_year, tape = year_and_tape(path, year, None if below == "." else below)
            writer.add(cls, data, rate, clip_year, tape, 0.0, len(data) / rate)
    return writer.written


# ----------------------------------------------------------------------- label table
def column(header: Dict[str, int], names: Sequence[str]) -> Optional[int]:
    return next((header[n] for n in names if n in header), None)


def table_rows(path: str) -> List[Tuple[int, str, float, float, str]]:
    """``(line, file, start, end, class)`` of a label table: a label column, or one 0/1 column
    per class (a row with no class set is noise; more than one is refused: one label per clip)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = [r for r in csv.reader(handle)]
    except (OSError, UnicodeDecodeError) as error:
        raise TableError(f"{path}: cannot read the table ({error})") from None
    if not rows:
        raise TableError(f"{path}: an empty table")
    header = {name.strip().lower(): i for i, name in enumerate(rows[0])}
    where, start, end = column(header, FILE_COLUMNS), column(header, START_COLUMNS), column(header, END_COLUMNS)
    label = column(header, LABEL_COLUMNS)
    if where is None or start is None or end is None:
        raise TableError(f"{path}: needs columns file, start and end (and label, or one 0/1 column per class); it has "
                         + ", ".join(rows[0]))
    one_hot = [] if label is not None else [i for i in range(len(rows[0])) if i not in (where, start, end)]
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        row = row + [""] * (len(rows[0]) - len(row))
        try:
            begin, finish = float(row[start]), float(row[end])
            if label is not None:
                name = row[label].strip()
            else:
                chosen = [rows[0][i].strip() for i in one_hot if float(row[i] or 0) > 0]
                if len(chosen) > 1:
                    raise ValueError(f"several classes ({', '.join(chosen)}): a clip has one label here")
                name = chosen[0] if chosen else "noise"
            if finish <= begin or not row[where].strip() or not name:
                raise ValueError("needs a file, a label and start < end")
        except ValueError as error:
            raise TableError(f"{path}:{line}: malformed row {row!r} ({error})") from None
        out.append((line, row[where].strip(), begin, finish, class_of(name)))
    return out


def from_table(path: str, audio: Optional[str], out: str, year: Optional[str] = None) -> List[str]:
    """The rows of a label table cut from the recordings they name (relative to ``audio``,
    else to the table's folder)."""
    rows = table_rows(path)
    base = audio or os.path.dirname(os.path.abspath(path))
    by_file: Dict[str, List[Tuple[int, float, float, str]]] = {}
    for line, name, begin, end, cls in rows:
        by_file.setdefault(name, []).append((line, begin, end, cls))
    missing = [name for name in by_file if not os.path.isfile(os.path.join(base, name))]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} recording(s) it names are not below {base}: "
                                + ", ".join(missing[:5]))
    writer = Writer(out, "table")
    for name, pieces in sorted(by_file.items()):
        recording = os.path.join(base, name)
        data, rate = read_audio(recording)
        clip_year, tape = year_and_tape(recording, year, os.path.splitext(name)[0])
        for line, begin, end, cls in pieces:
            piece = cut(data, rate, begin, end)
            if piece is None:
                raise TableError(f"{path}:{line}: {begin:g}-{end:g} s lies outside {recording} "
                                 f"({len(data) / rate:g} s)")
            writer.add(cls, piece, rate, clip_year, tape, begin, end)
    return writer.written


# ------------------------------------------------------------------------ Raven tables
def noise_spans(selections, seconds: float, length: float, count: int, rng: random.Random):
    """``count`` stretches of ``length`` s that touch no selection (fewer where none fit)."""
    busy = sorted((s.begin, s.end) for s in selections)
    free, cursor = [], 0.0
    for begin, end in busy + [(seconds, seconds)]:
        if begin - cursor >= length:
            free.append((cursor, begin))
        cursor = max(cursor, end)
    spans = []
    for _ in range(count):
        usable = [(a, b) for a, b in free if b - a >= length]
        if not usable:
            break
        a, b = rng.choice(usable)
        start = rng.uniform(a, b - length)
        spans.append((start, start + length))
        free.remove((a, b))
        free += [(a, start), (start + length, b)]
    return spans


def reviewed_events(path: str, label_column: str, rejected_as_noise: bool) -> List[Event]:
    """The events of one table; for a reviewed table only the verified rows (relabelled)
    and, when asked, the rejected ones as noise."""
    events = read_table(path, label_column)
    header, rows = read_rows(path)
    if "verified" not in header:
        return events
    verdicts = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if len(verdicts) != len(events):
        raise TableError(f"{path}: a reviewed table must not repeat selections in several views")
    kept = []
    for event, row in zip(events, verdicts):
        cell = lambda name: row[header[name]].strip() if name in header else ""
        verified = cell("verified").lower()
        if verified == "yes":
            kept.append(Event(event.recording, event.begin, event.end, cell("reviewed label") or event.label,
                              event.score, event.channel))
        elif verified == "no" and rejected_as_noise:
            kept.append(Event(event.recording, event.begin, event.end, "noise", event.score, event.channel))
    return kept


def from_raven(recordings: str, annotations: str, out: str, label_column: str = "Sound type",
               rejected_as_noise: bool = False, noise_clips: int = 0, seed: int = 0, year: Optional[str] = None,
               tape: Optional[str] = None) -> List[str]:
    """The selections of Raven tables cut from their recordings (plus ``noise_clips`` noise
    clips per recording from stretches no selection touches)."""
    tables = find_tables(annotations)
    if not tables:
        raise TableError(f"{annotations}: no *.selections.txt annotation tables")
    annotated = events_by_recording([e for table in tables for e in
                                     reviewed_events(table, label_column, rejected_as_noise)])
    found = {recording_name(p): p for p in recording_files(recordings)}
    missing = sorted(set(annotated) - set(found))
    if missing:
        raise TableError(f"annotation tables for recording(s) not found in {recordings}: {', '.join(missing)}")
    rng, writer = random.Random(seed), Writer(out, "raven")
    for recording, selections in sorted(annotated.items()):
        path = found[recording]
        data, rate = read_audio(path)
        clip_year, clip_tape = year_and_tape(path, year, tape)
        pieces = [(class_of(s.label), s.begin, s.end) for s in selections]
        if noise_clips:
            length = float(np.median([s.end - s.begin for s in selections])) if selections else 1.0
            pieces += [("noise", a, b) for a, b in noise_spans(selections, len(data) / rate, length, noise_clips, rng)]
        for cls, begin, end in pieces:
            piece = cut(data, rate, begin, end)
            if piece is None:
                log.warning(f"{path}: selection {begin}-{end} s is empty; skipped")
                continue
            writer.add(cls, piece, rate, clip_year, clip_tape, begin, end)
    return writer.written
