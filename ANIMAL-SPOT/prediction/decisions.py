"""From window probabilities to decisions and events (calls), streamed.

Decisions: with a threshold, as the original (a window is a detection when its
probability reaches it; multi-class: the window's top class, unless noise); with the
model's per-class thresholds, on calibrated probabilities (``DecisionRule``). With
``--unknown``, a detection whose unknown score is beyond the model's threshold is
labelled ``unknown``.

Events (spec §9.4): overlapping or touching detections of one class merge into one
event; a following event of another class starts where the previous one ends; the gaps
are noise, written only on request. Post-processing (``PostProcessing``; the defaults
keep the original's behaviour) acts on decisions and events, never on the log's raw
probabilities: ``smooth`` windows of median or mean probabilities before deciding,
``merge_gap`` seconds bridged between detections of one class, events shorter than
``min_duration`` dropped. ``Decider`` does all of it on the stream of window batches with
a lag of ``smooth // 2`` windows, so memory stays bounded for any recording length.
"""

import os
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Sequence

import numpy as np

from ..evaluation.calibration import calibrated_from_probabilities
from ..evaluation.log_format import PredictionLog, log_windows, parse_log, prediction_logs
from ..evaluation.raven import Event, selection_table
from ..models.model_file import load_model
from ..utils.atomic import atomic_write_text
from ..utils.classmap import ClassMap

UNKNOWN = -1                 # the label index of an "unknown" detection
UNKNOWN_NAME = "unknown"
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

    def flag(self, probs: Sequence[float], class_map: ClassMap) -> int:
        """The log's ``pred=`` value: the original's (top probability reaches the threshold,
        multi-class even for noise), or whether the rule in force detects the window."""
        if class_map.is_binary or self.thresholds:
            return int(self.decide(probs, class_map) is not None)
        return int(max(probs) >= self.threshold)


@dataclass(frozen=True)
class PostProcessing:
    """How windows become events (the defaults keep the original's behaviour)."""

    merge_gap: float = 0.0          # seconds bridged between same-class detections
    min_duration: float = 0.0       # shorter events are dropped
    smooth: int = 1                 # windows of probabilities smoothed before deciding
    smooth_method: str = "median"

    def __post_init__(self):
        if self.smooth < 1 or self.merge_gap < 0 or self.min_duration < 0:
            raise ValueError("--smooth must be >= 1, --merge_gap and --min_duration >= 0")
        if self.smooth_method not in ("median", "mean"):
            raise ValueError(f"--smooth_method must be median or mean, not {self.smooth_method!r}")

    @property
    def lag(self) -> int:
        return self.smooth // 2

    def describe(self) -> str:
        return (f"merge_gap {self.merge_gap:g} s, min_duration {self.min_duration:g} s, smooth {self.smooth} "
                f"({self.smooth_method})")


@dataclass
class Window:
    """One decided window: times (rounded as logged), raw probabilities, the probabilities
    it was decided on (smoothed or raw), its label (class index, ``UNKNOWN``, or None =
    no detection), the log's ``pred=`` flag; its samples, channel (None = the mean) and
    ``source`` (the window batch and row it came from: pooled features, network input)."""

    start: float
    end: float
    probs: List[float]
    decided_on: List[float]
    label: Optional[int]
    flag: int
    unknown: bool = False
    start_sample: Optional[int] = None
    end_sample: Optional[int] = None
    channel: Optional[int] = None
    source: Optional[tuple] = None


class EventMerger:
    """Detections in time order -> events, by the original's merging rule, with
    ``merge_gap`` and ``min_duration``."""

    def __init__(self, post: PostProcessing = PostProcessing()):
        self.post = post
        self.open: Optional[list] = None            # [begin, end, label, score, channel of the best window]
        self.closed: List[tuple] = []

    def add(self, start: float, end: float, label: int, score: float, channel: Optional[int] = None) -> None:
        start, end = round(start, 3), round(end, 3)
        if self.open is not None:
            last_end = round(self.open[1], 3)
            touching = last_end >= start
            if label == self.open[2] and (touching or start - last_end <= self.post.merge_gap):
                self.open[1] = end
                if score > self.open[3]:
                    self.open[3], self.open[4] = score, channel
                return
            self._close()
            if touching:
                self.open = [last_end, end, label, score, channel]
                return
        self.open = [start, end, label, score, channel]

    def _close(self) -> None:
        begin, end, label, score, channel = self.open
        self.open = None
        if end - begin + 1e-9 >= self.post.min_duration:
            self.closed.append((begin, end, label, score, channel))

    def finish(self) -> List[tuple]:
        if self.open is not None:
            self._close()
        return self.closed


class Decider:
    """Window batches in -> decided windows out (after ``post.smooth // 2`` windows of
    lag), and the recording's events at the end. ``unknown(batch)`` gives per window
    whether its unknown score is beyond the threshold (None: no unknown answer)."""

    def __init__(self, rule: DecisionRule, class_map: ClassMap, post: PostProcessing = PostProcessing()):
        self.rule, self.class_map, self.post = rule, class_map, post
        self.pending: Deque[tuple] = deque()      # (start, end, probs, unknown, meta) not yet decided
        self.history: Deque[List[float]] = deque(maxlen=post.lag + 1)   # raw probs of decided windows (smoothing)
        self.merger = EventMerger(post)
        self.duration = 0.0

    def feed(self, starts: Sequence[float], ends: Sequence[float], probs, unknown: Optional[Sequence[bool]] = None,
             meta: Optional[Sequence[dict]] = None) -> List[Window]:
        """Take windows in order; ``meta[i]`` holds the i-th window's ``start_sample``,
        ``end_sample``, ``channel`` and ``source``. Returns the windows decided now."""
        for i in range(len(starts)):
            self.pending.append((starts[i], ends[i], [float(p) for p in probs[i]],
                                 bool(unknown[i]) if unknown is not None else False, meta[i] if meta else {}))
        out = []
        while len(self.pending) > self.post.lag:
            out.append(self._decide_next())
        return out

    def flush(self) -> List[Window]:
        out = []
        while self.pending:
            out.append(self._decide_next())
        return out

    def _smoothed(self) -> List[float]:
        """The current window's probabilities smoothed over ``smooth`` windows centred on
        it; at the recording's ends the first and last windows are repeated (as
        ``scipy.ndimage``'s ``nearest`` mode)."""
        current = self.pending[0][2]
        if self.post.smooth == 1:
            return current
        lag = self.post.lag
        before = list(self.history)
        ahead = [item[2] for item in list(self.pending)[:self.post.smooth - lag]]
        before = [before[0] if before else current] * (lag - len(before)) + before
        ahead = ahead + [ahead[-1]] * (self.post.smooth - lag - len(ahead))
        rows = np.asarray(before + ahead, dtype=np.float64)
        values = np.median(rows, axis=0) if self.post.smooth_method == "median" else rows.mean(axis=0)
        return [float(v) for v in values]

    def _decide_next(self) -> Window:
        decided_on = self._smoothed()
        start, end, probs, unknown, meta = self.pending.popleft()
        if self.post.smooth > 1:
            self.history.append(probs)
            while len(self.history) > self.post.lag:
                self.history.popleft()
        label = self.rule.decide(decided_on, self.class_map)
        flag = self.rule.flag(decided_on, self.class_map)
        is_unknown = unknown and label is not None
        if is_unknown:
            label = UNKNOWN
        if label is not None:
            score = decided_on[1] if self.class_map.is_binary else max(decided_on)
            self.merger.add(start, end, label, score, meta.get("channel"))
        self.duration = end
        return Window(start, end, probs, decided_on, label, flag, is_unknown, **meta)

    def events(self, recording: str = "") -> List[Event]:
        """The recording's events (call after the last window); an event's channel is its
        best window's (1 for the channels' mean)."""
        names = self.class_map.names
        return [Event(recording, begin, end, label_name(label, names), score, channel or 1)
                for begin, end, label, score, channel in self.merger.finish()]


def label_name(label: Optional[int], names: Sequence[str]) -> str:
    if label is None:
        return NOISE
    if label == UNKNOWN:
        return UNKNOWN_NAME
    return names[label] if label < len(names) else str(label)


# --------------------------------------------------------------------- from logs
def log_events(log_: PredictionLog, rule: DecisionRule, post: PostProcessing = PostProcessing(),
               recording: str = "") -> List[Event]:
    """The events of a prediction log, decided as prediction decides them."""
    decider = Decider(rule, log_.class_map, post)
    starts, ends, probs, unknown = log_windows(log_)
    if rule.thresholds is not None and not log_.binary and any(not r.probs for r in log_.windows.values()):
        raise ValueError(f"{log_.path}: per-class thresholds need the log's output_layer probabilities")
    decider.feed(starts, ends, probs, unknown)
    decider.flush()
    return decider.events(recording)


def with_noise_gaps(events: List[Event], duration: float, noise_name: str = NOISE) -> List[Event]:
    """Noise events before, between and after the detections (spec §9.5)."""
    recording = events[0].recording if events else ""
    if not events:
        return [Event(recording, 0.0, duration, noise_name)]
    filled = []
    if events[0].begin != 0.0:
        filled.append(Event(recording, 0.0, events[0].begin, noise_name))
    for current, following in zip(events, events[1:] + [None]):
        filled.append(current)
        if following is not None and current.end != following.begin:
            filled.append(Event(recording, current.end, following.begin, noise_name))
    if filled[-1].end != duration:
        filled.append(Event(recording, filled[-1].end, duration, noise_name))
    return filled


def table_events(events: List[Event], duration: float, class_map: ClassMap, noise_in_anno: bool = False
                 ) -> List[Event]:
    """The rows of a Raven table: the detections, and the noise gaps when asked for (a
    class named ``noise`` is never a row otherwise)."""
    noise_index = class_map.noise_index
    noise_name = class_map.names[noise_index] if noise_index is not None else NOISE
    rows = with_noise_gaps(events, duration, noise_name) if noise_in_anno else events
    return [e for e in rows if noise_in_anno or e.label.lower() != NOISE]


def model_rule(log_: PredictionLog, fallback: float = 0.5) -> DecisionRule:
    """``threshold=model``: the thresholds and temperature of the model named in the log."""
    if not log_.model_path:
        raise ValueError(f"{log_.path}: no 'Model Path:' line; threshold=model needs it")
    spec = load_model(log_.model_path).spec
    if not spec.thresholds:
        raise ValueError(f"{log_.model_path}: the model file holds no per-class thresholds")
    return DecisionRule.from_model(spec, fallback)


def evaluate(prediction_path: str, output_dir: str, threshold, noise_in_anno: bool = False,
             echo=None) -> List[str]:
    """The original's EVALUATION step: ``<output_dir>/<log name>.annotation.result.txt``
    per log; returns their paths. ``threshold`` is a number, or ``"model"`` for the model
    file's per-class thresholds."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in prediction_logs(prediction_path):
        parsed = parse_log(path)
        rule = model_rule(parsed) if threshold == "model" else DecisionRule(float(threshold))
        if echo:
            echo(f"duration of tape={parsed.duration}")
        out = os.path.join(output_dir, os.path.basename(path) + ".annotation.result.txt")
        rows = table_events(log_events(parsed, rule), parsed.duration, parsed.class_map, noise_in_anno)
        atomic_write_text(out, selection_table(rows, parsed.data_opts))
        if echo:
            echo("prediction file has been processed successfully")
            echo(f"annotation file={out} has been successfully created!")
        written.append(out)
    return written

