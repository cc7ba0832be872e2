"""Window decisions -> Raven selection tables (the original's EVALUATION step, spec §9).

Decisions: with a threshold, as the original (a window is a detection when its
probability reaches it; multi-class: the window's class, unless noise); with the model's
per-class thresholds, on calibrated probabilities (``DecisionRule``). Overlapping or
touching detections of one class merge into a selection; a following selection of
another class starts where the previous one ends; the gaps are noise, written only on
request. ``score`` adds a ``Score`` column (the selection's highest probability).
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from prediction.log_format import PredictionLog, WindowRecord, parse_log, prediction_logs
from utils.atomic import atomic_write_text
from utils.calibration import calibrated_from_probabilities
from utils.classmap import ClassMap

HEADER_COLUMNS = ["Selection", "View", "Channel", "Begin time (s)", "End time (s)", "Low Freq (Hz)",
                  "High Freq (Hz)", "Sound type", "Comments"]
HEADER = "\t".join(HEADER_COLUMNS) + "\n"
NOISE = "noise"


@dataclass(frozen=True)
class DecisionRule:
    """``threshold`` on raw probabilities (the original), or, when ``thresholds`` is set,
    per-class thresholds on probabilities calibrated with ``temperature``."""

    threshold: float = 0.5
    thresholds: Optional[Dict[str, float]] = None
    temperature: float = 1.0

    @classmethod
    def from_model(cls, spec, fallback: float = 0.5) -> "DecisionRule":
        if spec is not None and spec.thresholds:
            return cls(fallback, dict(spec.thresholds), float(spec.temperature or 1.0))
        return cls(fallback)

    def decide(self, probs: Sequence[float], class_map: ClassMap) -> Optional[int]:
        """The detected class of a window with class probabilities ``probs``, or None."""
        noise = class_map.noise_index
        if self.thresholds is None:
            if class_map.is_binary:
                return 1 if probs[1] >= self.threshold else None
            c = int(np.argmax(probs))
            return c if probs[c] >= self.threshold and c != noise else None
        calibrated = calibrated_from_probabilities(np.asarray([probs], dtype=np.float64), self.temperature)[0]
        names = class_map.names
        if class_map.is_binary:
            limit = self.thresholds.get(names[1])
            return 1 if limit is not None and calibrated[1] >= limit else None
        c = int(np.argmax(calibrated))
        limit = self.thresholds.get(names[c])
        return c if c != noise and limit is not None and calibrated[c] >= limit else None

    def decide_record(self, record: WindowRecord, class_map: ClassMap) -> Optional[int]:
        if class_map.is_binary:
            return self.decide([1.0 - record.prob, record.prob], class_map)
        if self.thresholds is None:    # the original decides from the printed line alone
            noise = class_map.noise_index
            return record.label if record.prob >= self.threshold and record.label != noise else None
        if not record.probs or len(record.probs) != len(class_map):
            raise ValueError(f"window {record.start}-{record.end}: per-class thresholds need the log's "
                             "output_layer probabilities")
        return self.decide(record.probs, class_map)


Segment = Tuple[List[float], Optional[int], float]     # ([begin, end], class or None, score)


def merge_segments(log: PredictionLog, rule: DecisionRule) -> List[Segment]:
    class_map = log.class_map
    segments: List[Segment] = []
    for key, record in log.windows.items():
        label = rule.decide_record(record, class_map)
        if label is None:
            continue
        start, end = (float(v) for v in key.split("-"))
        score = record.prob
        if segments:
            (begin, last_end), last_label, last_score = segments[-1]
            if round(last_end, 3) >= round(start, 3):
                if last_label == label:
                    segments[-1] = ([round(begin, 3), round(end, 3)], label, max(last_score, score))
                else:
                    segments.append(([last_end, round(end, 3)], label, score))
                continue
        segments.append(([round(start, 3), round(end, 3)], label, score))
    return segments


def fill_gaps(segments: List[Segment], duration: float) -> List[Segment]:
    """Insert noise (label None) segments before, between and after the detections."""
    if not segments:
        return [([0.0, duration], None, float("nan"))]
    filled = []
    if segments[0][0][0] != 0.0:
        filled.append(([0.0, segments[0][0][0]], None, float("nan")))
    for current, following in zip(segments, segments[1:] + [None]):
        filled.append(current)
        if following is not None and current[0][1] != following[0][0]:
            filled.append(([current[0][1], following[0][0]], None, float("nan")))
    if filled[-1][0][1] != duration:
        filled.append(([filled[-1][0][1], duration], None, float("nan")))
    return filled


@dataclass
class Selection:
    begin: float
    end: float
    name: str
    score: float


def selections(log: PredictionLog, rule: DecisionRule, noise_in_anno: bool = False) -> List[Selection]:
    names = log.class_map.names
    noise_idx = log.class_map.noise_index
    noise_name = names[noise_idx] if noise_idx is not None else NOISE
    out = []
    for (begin, end), label, score in fill_gaps(merge_segments(log, rule), log.duration):
        name = noise_name if label is None else (names[label] if label < len(names) else str(label))
        if name.lower() == NOISE and not noise_in_anno:
            continue
        out.append(Selection(begin, end, name, score))
    return out


def selection_table(log: PredictionLog, rule: DecisionRule, noise_in_anno: bool = False,
                    score: bool = False) -> str:
    fmin, fmax = log.data_opts.get("fmin", ""), log.data_opts.get("fmax", "")
    rows = [HEADER.rstrip("\n") + ("\tScore" if score else "") + "\n"]
    for number, s in enumerate(selections(log, rule, noise_in_anno), start=1):
        row = f"{number}\tSpectrogram_1\t1\t{s.begin}\t{s.end}\t{fmin}\t{fmax}\t{s.name}\t "
        rows.append(row + (f"\t{format_score(s.score)}" if score else "") + "\n")
    return "".join(rows)


def format_score(value: float) -> str:
    return "" if value != value else f"{value:.4f}"


def combined_table(logs: Sequence[Tuple[str, PredictionLog, float]], rule: DecisionRule,
                   noise_in_anno: bool = False) -> str:
    """One table over several recordings with Raven's multi-file columns: times relative
    to the concatenation of the files (in the given order), ``Begin File`` and
    ``File Offset (s)``. ``logs`` holds ``(recording path, log, recording seconds)``."""
    columns = HEADER_COLUMNS[:-1] + ["Comments", "Begin File", "File Offset (s)", "Score"]
    rows, number, offset = ["\t".join(columns) + "\n"], 0, 0.0
    for recording, log, seconds in logs:
        fmin, fmax = log.data_opts.get("fmin", ""), log.data_opts.get("fmax", "")
        for s in selections(log, rule, noise_in_anno):
            number += 1
            rows.append(f"{number}\tSpectrogram_1\t1\t{round(offset + s.begin, 3)}\t{round(offset + s.end, 3)}\t"
                        f"{fmin}\t{fmax}\t{s.name}\t \t{os.path.basename(recording)}\t{s.begin}\t"
                        f"{format_score(s.score)}\n")
        offset += seconds
    return "".join(rows)


def model_rule(log: PredictionLog, fallback: float = 0.5) -> DecisionRule:
    """``threshold=model``: the thresholds and temperature of the model named in the log."""
    from models.model_file import load_model

    if not log.model_path:
        raise ValueError(f"{log.path}: no 'Model Path:' line; threshold=model needs it")
    spec = load_model(log.model_path).spec
    if not spec.thresholds:
        raise ValueError(f"{log.model_path}: the model file holds no per-class thresholds")
    return DecisionRule.from_model(spec, fallback)


def evaluate(prediction_path: str, output_dir: str, threshold, noise_in_anno: bool = False,
             echo=None) -> List[str]:
    """Write ``<output_dir>/<log name>.annotation.result.txt`` per log; return their paths.
    ``threshold`` is a number, or ``"model"`` for the model file's per-class thresholds."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in prediction_logs(prediction_path):
        log = parse_log(path)
        rule = model_rule(log) if threshold == "model" else DecisionRule(float(threshold))
        if echo:
            echo(f"duration of tape={log.duration}")
        out = os.path.join(output_dir, os.path.basename(path) + ".annotation.result.txt")
        atomic_write_text(out, selection_table(log, rule, noise_in_anno))
        if echo:
            echo("prediction file has been processed successfully")
            echo(f"annotation file={out} has been successfully created!")
        written.append(out)
    return written
