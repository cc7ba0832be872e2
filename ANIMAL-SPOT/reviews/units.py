"""What a review can look at: the units of a prediction folder.

A folder is read through ``prediction.folder`` (per recording the log wins; a table
stands for a recording only where there is no log; a ``combined`` table only for
recordings with nothing of their own). A recording ``<sub>/<name>`` of the folder is the
audio file ``<sub>/<name>.<ext>`` below ``--recordings``.

Units: the detections (the tables' events, decided from the logs by the run's rule and
event settings, as ``score.py`` decides them) and, from logs, the windows outside every
event (below the threshold, or in a detection that the event settings dropped). Each window below the threshold stands under the call type it most resembles
(noise aside), with ``detectable`` set when that call type is also its most probable
class overall (a lower threshold could detect it; a window whose top class is noise
cannot be). Below-threshold windows that overlap a detection, or a window kept before
them of any class, are left out: the units of a recording never overlap, so no call is
counted in two of them (as long as it is shorter than a window).
"""

import hashlib
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from ..evaluation.log_format import LogFormatError, log_windows, parse_log
from ..evaluation.raven import TableError, label_column, read_rows
from ..prediction.decisions import NOISE, log_events
from ..prediction.folder import Outputs, PredictionFolder
from ..utils.paths import plain

AUDIO_EXTENSIONS = (".wav", ".flac", ".WAV", ".FLAC", ".Wav")


class ReviewError(ValueError):
    """Bad input for a review; the message names the file and what is wrong."""


@dataclass
class Unit:
    id: str
    recording: str                       # path below --recordings, without the extension
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
    detectable: bool = True              # a lower threshold of its class could detect it

    def public(self) -> dict:
        return {"item": self.id, "recording": self.recording, "begin": self.begin, "end": self.end,
                "label": self.label, "score": self.score, "channel": self.channel, "class": self.cls,
                "above_threshold": self.above, "alternatives": [[n, p] for n, p in self.alternatives],
                "stratum": self.stratum, "how": self.how}


def unit_id(recording: str, begin: float, end: float, cls: str, above: bool, channel: int) -> str:
    text = f"{recording}|{begin}|{end}|{cls}|{int(above)}|{channel}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def find_recording(recordings: str, key: str) -> Optional[str]:
    """The audio file of a recording key below ``recordings`` (None where there is none, or
    where the key is no plain relative name: absolute, with ``..``). Links below
    ``recordings`` are followed: a season may span disks."""
    if not plain(key.replace(os.sep, "/")):
        return None
    for ext in AUDIO_EXTENSIONS:
        path = os.path.join(recordings, key + ext)
        if os.path.isfile(path):
            return path
    return None


def alternatives(row, names: Sequence[str], label: str, count: int = 3) -> List[Tuple[str, float]]:
    order = np.argsort(-np.asarray(row))
    return [(names[i], round(float(row[i]), 4)) for i in order if names[i] != label][:count]


def strongest_row(starts, ends, probs, begin: float, end: float, column: Optional[int]):
    """The probabilities of the event's window with the highest probability of its class
    (``column``; None: of its top class)."""
    inside = [i for i in range(len(starts)) if starts[i] < end and begin < ends[i]] or [0]
    return probs[max(inside, key=lambda i: probs[i][column] if column is not None else max(probs[i]))]


def log_units(folder: PredictionFolder, logs: Dict[Optional[int], str], key: str, recording: str) -> List[Unit]:
    """Detections and below-threshold windows of a recording's log(s). The detections are
    the tables' events: decided by the folder's rule and event settings (``predict_run.json``:
    threshold or per-class thresholds, ``--merge_gap``, ``--min_duration``, ``--smooth``),
    exactly as ``PredictionFolder.events`` decides them for ``score.py``."""
    units = []
    for channel, path in sorted(logs.items(), key=lambda item: item[0] or 0):
        try:
            parsed = parse_log(path)
            events = [e for e in log_events(parsed, folder.rule(parsed), folder.post(), key)
                      if e.label.lower() != NOISE]
        except (LogFormatError, OSError, ValueError) as error:
            raise ReviewError(str(error)) from None
        names, noise, binary = parsed.class_map.names, parsed.class_map.noise_index, parsed.class_map.is_binary
        calls = [c for c in range(len(names)) if c != noise]
        starts, ends, probs, _ = log_windows(parsed)
        channel = channel or 1
        for event in events:
            row = strongest_row(starts, ends, probs, event.begin, event.end,
                                names.index(event.label) if event.label in names else None)
            units.append(Unit(unit_id(key, event.begin, event.end, event.label, True, channel), key, recording,
                              event.begin, event.end, event.label, event.score, event.label, True, channel,
                              alternatives(row, names, event.label)))
        taken = [(e.begin, e.end) for e in events]
        last_end = -1.0
        for start, end, row in zip(starts, ends, probs):
            if start < last_end or any(b < end and start < e for b, e in taken):
                continue                   # overlaps a detection or the unit kept before it
            last_end = end
            top = int(np.argmax(row))
            best = max(calls, key=lambda c: row[c]) if calls else top
            cls = names[best]
            units.append(Unit(unit_id(key, start, end, cls, False, channel), key, recording, start, end, cls,
                              float(row[best]), cls, False, channel, alternatives(row, names, cls),
                              detectable=binary or best == top))
    return units


def table_units(folder: PredictionFolder, outputs: Outputs, recording: str, seconds: float) -> List[Unit]:
    """The selections of a recording's table as detections (noise rows left out)."""
    try:
        events = folder.events(outputs)
    except TableError as error:
        raise ReviewError(str(error)) from None
    units, seen = [], set()
    for event in events:
        if event.label.lower() == "noise" or (event.begin, event.end, event.label, event.channel) in seen:
            continue
        seen.add((event.begin, event.end, event.label, event.channel))
        if event.end > seconds + 1e-3:
            raise ReviewError(f"{outputs.table}: the selection {event.begin:g}-{event.end:g} s ends after the "
                              f"recording {recording} ({seconds:g} s)")
        units.append(Unit(unit_id(outputs.key, event.begin, event.end, event.label, True, event.channel), outputs.key,
                          recording, event.begin, event.end, event.label, event.score, event.label, True,
                          event.channel))
    return units


def combined_units(paths: Sequence[str], recordings: str, taken: set) -> Dict[str, List[Unit]]:
    """Rows of combined tables for recordings without a source of their own (by
    ``Begin Path``, else ``Begin File``)."""
    out: Dict[str, List[Unit]] = {}
    for path in paths:
        header, rows = read_rows(path, ReviewError, empty_ok=True)
        if not rows:
            continue
        label_at = label_column(header)
        where = header.get("begin path", header.get("begin file"))
        if label_at is None or where is None or "file offset (s)" not in header:
            raise ReviewError(f"{path}: a combined table needs a label column, Begin Path or Begin File, and "
                              "File Offset (s)")
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            key = os.path.splitext(row[where].strip())[0]
            label = row[header[label_at]].strip()
            try:
                if not key or not label:
                    raise ValueError("no recording or label")
                begin = float(row[header["file offset (s)"]])
                end = begin + float(row[header["end time (s)"]]) - float(row[header["begin time (s)"]])
                score = float(row[header["score"]]) if "score" in header and row[header["score"]].strip() else None
            except (KeyError, ValueError):
                raise ReviewError(f"{path}:{number}: malformed row {row!r}") from None
            recording = None if key in taken else find_recording(recordings, key)
            if recording is None or label.lower() == "noise":
                continue
            out.setdefault(key, []).append(Unit(unit_id(key, begin, end, label, True, 1), key, recording, begin, end,
                                                label, score, label, True))
    return out


def duration(path: str) -> float:
    try:
        return sf.info(path).duration
    except Exception as error:
        raise ReviewError(f"{path}: cannot read audio ({error})") from None


@dataclass
class Loaded:
    units: List[Unit]
    seconds: Dict[str, float]            # recording -> its duration
    sources: Dict[str, str]              # recording -> log | table | result | other | combined

    @property
    def all_logs(self) -> bool:
        return all(kind == "log" for kind in self.sources.values())


def load_units(predictions: str, recordings: str) -> Loaded:
    """Every unit of the prediction folder, the seconds of each recording, and each
    recording's source."""
    try:
        folder = PredictionFolder(predictions)
    except FileNotFoundError:
        raise ReviewError(f"--predictions {predictions}: no such folder") from None
    found, combined = folder.scan()
    if not found and not combined:
        raise ReviewError(f"--predictions {predictions}: no prediction logs or selection tables")
    units: List[Unit] = []
    seconds: Dict[str, float] = {}
    sources: Dict[str, str] = {}
    missing = []
    for key, outputs in found.items():
        recording = find_recording(recordings, key)
        if recording is None:
            first = next(iter(outputs.logs.values()), outputs.table)
            missing.append(f"{first} -> {os.path.join(recordings, key)}.wav (or .flac)")
            continue
        seconds[key], sources[key] = duration(recording), outputs.source
        units += log_units(folder, outputs.logs, key, recording) if outputs.logs else \
            table_units(folder, outputs, recording, seconds[key])
    if missing:
        raise ReviewError(f"{len(missing)} recording(s) of --predictions not found below --recordings "
                          f"{recordings}:\n  " + "\n  ".join(missing))
    for key, extra in combined_units(combined, recordings, set(seconds)).items():
        seconds[key], sources[key] = duration(extra[0].path), "combined"
        for unit in extra:
            if unit.end > seconds[key] + 1e-3:
                raise ReviewError(f"{combined[0]}: the selection {unit.begin:g}-{unit.end:g} s ends after the "
                                  f"recording {unit.path} ({seconds[key]:g} s)")
        units += extra
    return Loaded(units, seconds, sources)

