"""The original's per-recording prediction log (spec §8.3, §8.4): its writer and its
parser, side by side so they cannot drift.

Header (INFO): the recording's path, ``Model Path: ...``, ``dataOpts: {...}``, the
prediction settings line, ``class distribution: {...}``, the normalisation line, file
size, hop and stop time. Records: ``time=<start>-<end>, pred=<0|1>, prob=<p>`` (binary)
or ``time=..., pred=..., pred_class=<name>-<index>, prob=<p>`` followed by
``output_layer:`` and one ``<name>=<p>;`` line per class (multi-class). Probabilities are
the shortest repr of the double value of the float32 probability, as the original prints
them.
"""

import ast
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..utils.classmap import ClassMap


class LogFormatError(ValueError):
    """A prediction log line that cannot be read; the message names file and line."""


@dataclass
class WindowRecord:
    start: float
    end: float
    prob: float                              # the printed probability (class 1, or the top class)
    label: Optional[int] = None              # multi-class: the top class index
    probs: Optional[List[float]] = None      # multi-class: every class's probability
    prob_text: str = ""                      # as printed (the evaluator compares text)
    unknown: bool = False                    # pred_class=unknown (predict.py --unknown)
    flag: Optional[int] = None               # the printed pred= value (the run's decision)


@dataclass
class PredictionLog:
    path: str
    classes: Dict[str, int] = field(default_factory=dict)
    data_opts: Dict = field(default_factory=dict)
    model_path: Optional[str] = None
    windows: "OrderedDict[str, WindowRecord]" = field(default_factory=OrderedDict)   # "start-end" -> record
    duration: float = 0.0
    threshold: Optional[float] = None        # the header's threshold: the run's (the original's) rule

    @property
    def binary(self) -> bool:
        return self.class_map.is_binary

    @property
    def class_map(self) -> ClassMap:
        return ClassMap.from_dict(self.classes)

    def add(self, record: WindowRecord, key: Optional[str] = None) -> None:
        self.windows[key or f"{record.start}-{record.end}"] = record
        self.duration = record.end


# --------------------------------------------------------------------------- writing
class LogWriter:
    """Writes one recording's log through ``logger`` (file and console handlers)."""

    def __init__(self, logger: logging.Logger, class_map: ClassMap):
        self.logger, self.class_map = logger, class_map
        self.names = class_map.names

    def header(self, recording: str, model_path: str, data_opts: dict, sequence_len: float, hop: float,
               threshold: float, fmin, fmax, min_max: bool, n_samples: int, hop_samples: int) -> None:
        info = self.logger.info
        info(recording)
        info(f"Model Path: {model_path}")
        info(f"dataOpts: {data_opts}")
        info(f"prediction length: {sequence_len}[s], hop length: {hop}[s], threshold: {threshold}, "
             f"prediction fmin: {fmin}[Hz] prediction fmax: {fmax}[Hz]")
        info(f"class distribution: {self.class_map.to_dict()}")
        info("Init min-max-normalization activated" if min_max else "Init 0/1-dB-normalization activated")
        info(f"size of the file(samples)={n_samples}")
        info(f"size of hop(samples)={hop_samples}")
        info(f"stop time={max(n_samples // hop_samples, 1)}")

    def record(self, start: float, end: float, probs: List[float], decision: int,
               start_sample: Optional[int] = None, end_sample: Optional[int] = None, unknown: bool = False) -> None:
        """One window's record; ``unknown`` writes ``pred_class=unknown`` (the
        probabilities stay the raw softmax)."""
        if start_sample is not None:
            self.logger.debug(f"start extract={start_sample}")
            self.logger.debug(f"end extract={end_sample}")
        times = f"time={start}-{end}"
        if self.class_map.is_binary:
            label = ", pred_class=unknown" if unknown else ""
            self.logger.info(f"{times}, pred={decision}{label}, prob={probs[1]}")
            return
        c = max(range(len(probs)), key=probs.__getitem__)
        rows = "".join(f"{name}={p};\n" for name, p in zip(self.names, probs))
        label = "unknown" if unknown else f"{self.names[c]}-{c}"
        self.logger.info(f"{times}, pred={decision}, pred_class={label}, prob={probs[c]}"
                         f"\noutput_layer:\n{rows}")


# --------------------------------------------------------------------------- parsing
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
    """Read a prediction log (ours or the original's)."""
    result = PredictionLog(path)
    last: Optional[WindowRecord] = None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if "pred=" in line and "prob=" in line:
                last = _parse_window(result, _message(line), path, number)
            elif "prediction length" in line and "hop length" in line:
                result.threshold = _header_threshold(line)
            elif "class distribution" in line:
                result.classes = _literal(line.split("class distribution:", 1)[1], path, number, "class distribution")
            elif "dataOpts" in line:
                result.data_opts = _literal(line.split("dataOpts:", 1)[1], path, number, "dataOpts")
            elif "Model Path:" in line:
                result.model_path = _message(line).split("Model Path:", 1)[1].strip()
            elif last is not None and last.probs is not None and line.rstrip().endswith(";") and "=" in line:
                try:
                    last.probs.append(float(line.rsplit("=", 1)[1].strip().rstrip(";")))
                except ValueError:
                    raise LogFormatError(f"{path}:{number}: malformed class probability {line.strip()!r}") from None
    return result


def logged_recording(path: str) -> Optional[str]:
    """The recording a log's first line names (None where it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return None
    return _message(first).rstrip("\n") or None


def _header_threshold(line: str) -> Optional[float]:
    try:
        return float(line.split("threshold:", 1)[1].split(",", 1)[0].strip())
    except (IndexError, ValueError):
        return None


def _parse_window(log: PredictionLog, message: str, path: str, number: int) -> WindowRecord:
    if not log.classes:
        raise LogFormatError(f"{path}:{number}: window record before the 'class distribution' line")
    try:
        key = message.split(",", 1)[0].split("time=", 1)[1].strip()
        start, end = (float(v) for v in key.split("-"))
        prob_text = message.split("prob=", 1)[1].strip()
        prob = float(prob_text)
        flag = int(message.split("pred=", 1)[1].split(",", 1)[0].strip())
        label, unknown = None, False
        if "pred_class=" in message:
            text = message.split("pred_class=", 1)[1].split(",", 1)[0].strip()
            unknown = text == "unknown"
            if not log.binary and not unknown:
                label = int(text.rsplit("-", 1)[1].strip())
    except (IndexError, ValueError):
        raise LogFormatError(f"{path}:{number}: malformed window record {message.strip()!r}") from None
    record = WindowRecord(start, end, prob, label, None if log.binary else [], prob_text, unknown, flag)
    log.add(record, key)
    return record


def prediction_logs(path: str) -> List[str]:
    """A single log file, or the ``*_predict_output*`` files of a folder (sorted)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"prediction_dir {path}: no such file or folder")
    return [os.path.join(path, n) for n in sorted(os.listdir(path))
            if "_predict_output" in n and os.path.isfile(os.path.join(path, n))]


def log_windows(log_: PredictionLog):
    """``(starts, ends, probs, unknown)`` of a parsed log (binary records: ``[1 - p, p]``)."""
    starts, ends, rows, unknown = [], [], [], []
    n = len(log_.class_map)
    for key, record in log_.windows.items():
        start, end = (float(v) for v in key.split("-"))
        if log_.binary:
            probs = [1.0 - record.prob, record.prob]
        elif record.probs and len(record.probs) == n:
            probs = list(record.probs)
        else:                  # the printed line alone: the top class's probability
            probs = [0.0] * n
            probs[record.label] = record.prob
        starts.append(start)
        ends.append(end)
        rows.append(probs)
        unknown.append(record.unknown)
    return starts, ends, np.asarray(rows, dtype=np.float64).reshape(len(rows), n), unknown
