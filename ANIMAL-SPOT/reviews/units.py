"""What a review can look at: the units of a prediction folder.

A folder is read through ``prediction.folder`` (per recording the log wins; a table
stands for a recording only where there is no log; a ``combined`` table only for
recordings with nothing of their own). A recording ``<sub>/<name>`` of the folder is the
audio file ``<sub>/<name>.<ext>`` below ``--recordings``.

Units: the detections (touching detection windows of one label merged, as the tables
merge them; score = the highest probability) and, from logs, the windows below the
threshold. Each window below the threshold stands under the call type it most resembles
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

from evaluation.log_format import LogFormatError, log_windows, parse_log
from evaluation.raven import TableError, label_column, read_rows
from prediction.folder import Outputs, PredictionFolder
from utils.paths import plain

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


def merge_detections(windows) -> List[list]:
    """Detection windows ``(start, end, probs, label, score)`` -> events ``[begin, end,
    label, score, probs]`` by the tables' rule (touching windows of one label merge; a
    following event of another label starts where the previous one ends)."""
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


def log_units(logs: Dict[Optional[int], str], key: str, recording: str) -> List[Unit]:
    """Detections and below-threshold windows of a recording's log(s)."""
    units = []
    for channel, path in sorted(logs.items(), key=lambda item: item[0] or 0):
        try:
            parsed = parse_log(path)
        except (LogFormatError, OSError) as error:
            raise ReviewError(str(error)) from None
        names, noise, binary = parsed.class_map.names, parsed.class_map.noise_index, parsed.class_map.is_binary
        calls = [c for c in range(len(names)) if c != noise]
        starts, ends, probs, unknown = log_windows(parsed)
        flags = [r.flag for r in parsed.windows.values()]
        detections, rest = [], []
        for i in range(len(starts)):
            row = probs[i]
            top = int(np.argmax(row))
            if flags[i] == 1 and (binary or unknown[i] or top != noise):
                label = "unknown" if unknown[i] else names[1 if binary else top]
                detections.append((starts[i], ends[i], row, label, float(row[1] if binary else row[top])))
            else:
                best = max(calls, key=lambda c: row[c]) if calls else top
                rest.append((starts[i], ends[i], row, names[best], float(row[best]), binary or best == top))
        events = merge_detections(detections)
        for begin, end, label, score, row in events:
            units.append(Unit(unit_id(key, begin, end, label, True, channel or 1), key, recording, begin, end, label,
                              score, label, True, channel or 1, alternatives(row, names, label)))
        taken = [(e[0], e[1]) for e in events]
        last_end = -1.0
        for start, end, row, cls, score, detectable in rest:
            if start < last_end or any(b < end and start < e for b, e in taken):
                continue                   # overlaps a detection or the unit kept before it
            last_end = end
            units.append(Unit(unit_id(key, start, end, cls, False, channel or 1), key, recording, start, end, cls,
                              score, cls, False, channel or 1, alternatives(row, names, cls), detectable=detectable))
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
            recording = None if key in taken else find_recording(recordings, key)
            label = row[header[label_at]].strip()
            if recording is None or label.lower() == "noise":
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
        units += log_units(outputs.logs, key, recording) if outputs.logs else \
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

