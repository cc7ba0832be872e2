"""Prediction logs -> Raven selection tables (the original's EVALUATION step).

Per window: a detection when its probability reaches the threshold (multi-class: the
window's class, else noise). Overlapping or touching detections of one class merge into
a segment; a following segment of another class starts where the previous one ends;
the gaps become noise segments, written only on request.
"""

import ast
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

HEADER = "Selection\tView\tChannel\tBegin time (s)\tEnd time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSound type\tComments\n"
NOISE = "noise"


class LogFormatError(ValueError):
    """A prediction log line that cannot be read; the message names file and line."""


@dataclass
class PredictionLog:
    path: str
    classes: Dict[str, int] = field(default_factory=dict)
    data_opts: Dict = field(default_factory=dict)
    windows: "OrderedDict[str, Tuple[str, Optional[str]]]" = field(default_factory=OrderedDict)  # time -> (prob, class)
    duration: float = 0.0

    @property
    def binary(self) -> bool:
        return len(self.classes) <= 2


def _message(line: str) -> str:
    for marker in ("|INFO|", "|I|"):
        if marker in line:
            return line.split(marker, 1)[1]
    return line


def _literal(text: str, path: str, number: int, what: str):
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        raise LogFormatError(f"{path}:{number}: cannot read the {what} {text.strip()!r}") from None
    if not isinstance(value, dict):
        raise LogFormatError(f"{path}:{number}: the {what} is not a dictionary")
    return value


def parse_log(path: str) -> PredictionLog:
    result = PredictionLog(path)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if "pred=" in line and "prob=" in line:
                _parse_window(result, _message(line), path, number)
            elif "prediction length" in line and "hop length" in line:
                continue
            elif "class distribution" in line:
                result.classes = _literal(line.split("class distribution:", 1)[1], path, number, "class distribution")
            elif "dataOpts" in line:
                result.data_opts = _literal(line.split("dataOpts:", 1)[1], path, number, "dataOpts")
    return result


def _parse_window(log: PredictionLog, message: str, path: str, number: int) -> None:
    if not log.classes:
        raise LogFormatError(f"{path}:{number}: window record before the 'class distribution' line")
    try:
        key = message.split(",", 1)[0].split("time=", 1)[1].strip()
        start, end = (float(v) for v in key.split("-"))
        prob = message.split("prob=", 1)[1].strip()
        float(prob)
        label = None
        if not log.binary:
            label = message.split("pred_class=", 1)[1].split(",", 1)[0].split("-", 1)[1].strip()
            int(label)
    except (IndexError, ValueError):
        raise LogFormatError(f"{path}:{number}: malformed window record {message.strip()!r}") from None
    log.windows[key] = (prob, label)
    log.duration = end


def noise_index(classes: Dict[str, int]) -> Optional[int]:
    for name, index in classes.items():
        if name.lower() == NOISE:
            return index
    return None


def decisions(log: PredictionLog, threshold: float) -> "OrderedDict[str, Optional[str]]":
    """time key -> class index (as a string) of a detection, or None."""
    noise_idx = noise_index(log.classes)
    result = OrderedDict()
    for key, (prob, label) in log.windows.items():
        detected = float(prob) >= threshold
        if log.binary:
            result[key] = "1" if detected else None
        else:
            result[key] = label if detected and (noise_idx is None or label != str(noise_idx)) else None
    return result


def merge_segments(windows: "OrderedDict[str, Optional[str]]") -> List[Tuple[List[float], str]]:
    segments: List[Tuple[List[float], str]] = []
    for key, label in windows.items():
        if label is None:
            continue
        start, end = (float(v) for v in key.split("-"))
        if segments:
            (begin, last_end), last_label = segments[-1]
            if round(last_end, 3) >= round(start, 3):
                if last_label == label:
                    segments[-1] = ([round(begin, 3), round(end, 3)], label)
                else:
                    segments.append(([last_end, round(end, 3)], label))
                continue
        segments.append(([round(start, 3), round(end, 3)], label))
    return segments


def fill_gaps(segments, duration: float, gap_label=None):
    """Insert ``gap_label`` segments before, between and after the detections."""
    if not segments:
        return [([0.0, duration], gap_label)]
    filled = []
    if segments[0][0][0] != 0.0:
        filled.append(([0.0, segments[0][0][0]], gap_label))
    for current, following in zip(segments, segments[1:] + [None]):
        filled.append(current)
        if following is not None and current[0][1] != following[0][0]:
            filled.append(([current[0][1], following[0][0]], gap_label))
    if filled[-1][0][1] != duration:
        filled.append(([filled[-1][0][1], duration], gap_label))
    return filled


def selection_table(log: PredictionLog, threshold: float, noise_in_anno: bool) -> str:
    names = {index: name for name, index in reversed(list(log.classes.items()))}
    noise_idx = noise_index(log.classes)
    noise_name = names[noise_idx] if noise_idx is not None else NOISE
    segments = fill_gaps(merge_segments(decisions(log, threshold)), log.duration)
    fmin, fmax = log.data_opts.get("fmin", ""), log.data_opts.get("fmax", "")
    rows, selection = [HEADER], 0
    for (begin, end), label in segments:
        name = noise_name if label is None else names.get(int(label), str(label))
        if name.lower() == NOISE and not noise_in_anno:
            continue
        selection += 1
        rows.append(f"{selection}\tSpectrogram_1\t1\t{begin}\t{end}\t{fmin}\t{fmax}\t{name}\t \n")
    return "".join(rows)


def prediction_logs(path: str) -> List[str]:
    """A single log file, or the ``*_predict_output*`` files of a folder (sorted)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"prediction_dir {path}: no such file or folder")
    return [os.path.join(path, n) for n in sorted(os.listdir(path))
            if "_predict_output" in n and os.path.isfile(os.path.join(path, n))]


def evaluate(prediction_path: str, output_dir: str, threshold: float, noise_in_anno: bool = False,
             echo=None) -> List[str]:
    """Write ``<output_dir>/<log name>.annotation.result.txt`` per log; return their paths."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in prediction_logs(prediction_path):
        log = parse_log(path)
        if echo:
            echo(f"duration of tape={log.duration}")
        out = os.path.join(output_dir, os.path.basename(path) + ".annotation.result.txt")
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(selection_table(log, threshold, noise_in_anno))
        os.replace(tmp, out)
        if echo:
            echo("prediction file has been processed successfully")
            echo(f"annotation file={out} has been successfully created!")
        written.append(out)
    return written
