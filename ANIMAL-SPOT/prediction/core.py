"""The prediction core: model files in, per-window class probabilities out.

``Predictor`` holds one model, or several (an ensemble: their probabilities are
averaged), and optionally a binary detector that decides which windows the classifier
sees. ``predictor.stream(path)`` yields a ``WindowBatch`` per batch of windows: the
windows' times and class probabilities (and the pooled encoder features when asked).
Each model computes its own spectrograms of the same windows, with its own data options.

Python use::

    from .core import Predictor
    predictor = Predictor.from_files(["ANIMAL-SPOT.pk"], sequence_len=0.5, hop=0.25)
    probs, starts, ends = predictor.predict_file("recording.wav")   # NumPy arrays

Backends live in ``prediction.backends``. Where a member runs in reduced precision
(``--amp``), every ``CHECK_EVERY``-th window is computed in float32 too and handed along
as the batch's ``reference`` (``prediction.precision``); with ``unknown=True`` each batch
carries the first model's unknown flags; ``stream_max`` picks per window the channel whose
top class is most probable.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.audio_io import SignalReader
from ..data.recording import AudioOptions, AudioWindows, RecordingWindows, WindowGeometry, last_window
from ..evaluation.calibration import is_unknown
from ..models.model_file import ModelFileError, ModelSpec
from .backends import PredictionModel
from .precision import CHECK_EVERY
from ..utils.classmap import ClassMap

log = logging.getLogger("PREDICT")
DEFAULT_SEQUENCE_LEN = 2.0      # seconds, the original's default


# ------------------------------------------------------------------------ predictor
def model_sequence_len(spec: ModelSpec) -> float:
    """The training segment length (seconds) of a model of this project, else 2 s."""
    ms = (spec.train_opts or {}).get("sequence_len")
    return float(ms) / 1000 if ms else DEFAULT_SEQUENCE_LEN


def output_class_map(classes: ClassMap, detector: Optional[PredictionModel]) -> ClassMap:
    """With a detector, the classifier's classes plus ``noise`` when it has none."""
    if detector is None or classes.noise_index is not None:
        return classes
    names = classes.names + ["noise"]
    return ClassMap(tuple((name, i) for i, name in enumerate(names)))


@dataclass
class Reference:
    """Sampled windows of a reduced-precision batch, computed in float32 as well."""

    rows: List[int]
    probs: torch.Tensor
    unknown: Optional[List[bool]]


@dataclass
class WindowBatch:
    first: int                          # index of the first window
    starts: List[float]                 # seconds, rounded to 3 decimals as logged
    ends: List[float]
    start_samples: List[int]
    end_samples: List[int]
    probs: torch.Tensor                 # (B, classes) float32
    pooled: Optional[torch.Tensor]      # (B, C) of the (first) classifier, when asked
    inputs: Optional[torch.Tensor]      # (B, 1, T, F) network input of the (first) classifier
    unknown: Optional[List[bool]] = None    # beyond the first model's unknown threshold (--unknown)
    channels: Optional[List[int]] = None    # per window, the channel it came from (--channels max)
    reference: Optional[Reference] = None   # --amp: sampled windows in float32

    def meta(self, channel: Optional[int] = None) -> List[dict]:
        """Per window what a ``Decider`` passes on: samples, channel and ``(batch, row)``."""
        return [{"start_sample": self.start_samples[i], "end_sample": self.end_samples[i],
                 "channel": channel if channel is not None else (self.channels[i] if self.channels else None),
                 "source": (self, i)} for i in range(len(self.starts))]


class Predictor:
    """Averages the probabilities of ``models`` (which share classes) over the windows of a
    recording; with a ``detector``, only windows whose detector probability of ``target``
    reaches ``detector_threshold`` go to the classifiers, the others are noise."""

    def __init__(self, models: Sequence[PredictionModel], sequence_len: Optional[float] = None, hop: float = 1.0,
                 batch_size: int = 16, detector: Optional[PredictionModel] = None,
                 detector_threshold: Optional[float] = None, device: torch.device = torch.device("cpu"),
                 prefetch: bool = True, unknown: bool = False):
        if not models:
            raise ValueError("no model to predict with")
        self.models, self.detector, self.device = list(models), detector, device
        self.unknown = models[0].spec.unknown if unknown else None
        if unknown and not self.unknown:
            raise ModelFileError(f"{models[0].path}: --unknown needs a model trained by this version (its file "
                                 "holds no unknown threshold)")
        first = self.models[0]
        for other in self.models[1:]:
            if not other.class_map.same_classes(first.class_map):
                raise ModelFileError(f"the ensemble's models have different classes: {first.path} "
                                     f"{first.class_map.to_dict()} and {other.path} {other.class_map.to_dict()} "
                                     f"({first.class_map.describe_difference(other.class_map)})")
        self.class_map = output_class_map(first.class_map, detector)
        self.sequence_len = sequence_len if sequence_len is not None else model_sequence_len(first.spec)
        audio = [m for m in self.members if isinstance(m.options, AudioOptions)]
        if audio:                               # a foundation encoder takes windows of its own length
            if len(audio) < len(self.members) or len({m.options.window for m in audio}) > 1:
                raise ModelFileError("a model on a foundation encoder predicts alone (or with heads on the same "
                                     "encoder): its windows have the encoder's length and sample rate")
            if sequence_len is not None and abs(sequence_len - audio[0].options.window) > 1e-9:
                log.warning(f"--sequence_len {sequence_len} s: {first.path} takes windows of its encoder's "
                            f"{audio[0].options.window:g} s")
            self.sequence_len = audio[0].options.window
        self.hop, self.batch_size, self.prefetch = hop, batch_size, prefetch
        if detector is not None:
            if not detector.class_map.is_binary:
                raise ModelFileError(f"{detector.path}: a detector must be a binary (target/noise) model")
            stored = (detector.spec.thresholds or {}).get("target")
            self.detector_threshold = detector_threshold if detector_threshold is not None else (stored or 0.5)

    @classmethod
    def from_files(cls, paths: Sequence[str], sequence_len: Optional[float] = None, hop: float = 1.0,
                   batch_size: int = 16, device: torch.device = torch.device("cpu"), **kwargs) -> "Predictor":
        return cls([PredictionModel.open(p, device) for p in paths], sequence_len, hop, batch_size, device=device,
                   **kwargs)

    @property
    def members(self) -> List[PredictionModel]:
        return self.models + ([self.detector] if self.detector else [])

    # ------------------------------------------------------------------- windows
    def geometry(self, reader: SignalReader) -> WindowGeometry:
        options = self.models[0].options                                 # raw audio: the last window too
        return WindowGeometry.from_seconds(self.sequence_len, self.hop, reader.sr, reader.n_samples,
                                           last_window(options) if isinstance(options, AudioOptions) else None)

    def window_sets(self, path: str, reader: Optional[SignalReader] = None, channel: Optional[int] = None
                    ) -> List[RecordingWindows]:
        """The windows of ``path`` (one ``channel``, 1-based, or the channels' mean) for every
        model and the detector (the first model's count for all)."""
        sets, count = [], None
        for member in self.members:
            own = reader if reader is not None and reader.sr == member.options.sr else None
            if isinstance(member.options, AudioOptions):
                windows = AudioWindows(path, member.options, self.hop, self.batch_size, own, count, channel)
            else:
                windows = RecordingWindows(path, member.options, self.sequence_len, self.hop, self.batch_size, own,
                                           self.device, count, channel)
            count = windows.geometry.count if count is None else count
            sets.append(windows)
        return sets

    @property
    def needs_pooled(self) -> bool:
        return bool(self.unknown) and self.unknown["score"] == "centroid_distance"

    def stream(self, path: str, pooled: bool = False, reader: Optional[SignalReader] = None,
               channel: Optional[int] = None) -> Iterator[WindowBatch]:
        """The window batches of one channel (or the mean of the channels)."""
        sets = self.window_sets(path, reader, channel)
        geometry = sets[0].geometry
        batches = zip(*[iter(s) for s in sets])
        for parts in prefetch(batches, self.prefetch):
            first = parts[0][0]
            inputs = [x for _, x in parts]
            probs, hidden = self.classify(inputs, pooled or self.needs_pooled)
            reference = self.reference(first, inputs) if self.ran_reduced() else None
            spans = [geometry.span(i) for i in range(first, first + probs.shape[0])]
            seconds = [geometry.seconds(i) for i in range(first, first + probs.shape[0])]
            yield WindowBatch(first, [s for s, _ in seconds], [e for _, e in seconds], [s for s, _ in spans],
                              [e for _, e in spans], probs, hidden if pooled else None, inputs[0],
                              self.unknown_flags(probs, hidden), reference=reference)

    def stream_max(self, path: str, channels: int, pooled: bool = False) -> Iterator[WindowBatch]:
        """``--channels max``: every channel predicted; per window, the channel whose top
        class is most probable."""
        return best_channel([self.stream(path, pooled, channel=c) for c in range(1, channels + 1)])

    def unknown_flags(self, probs: torch.Tensor, hidden: Optional[torch.Tensor]) -> Optional[List[bool]]:
        if not self.unknown:
            return None
        features = None if hidden is None else hidden.double().numpy()
        return [bool(v) for v in is_unknown(self.unknown, features, probs.double().numpy())]

    # ---------------------------------------------------------------- networks
    def classify(self, inputs: List[torch.Tensor], pooled: bool, full: bool = False):
        """Probabilities of one batch (inputs per model, the detector's last); ``full``:
        every member in float32."""
        if self.detector is None:
            return self.average(inputs, pooled, full)
        detected = self.detector.backend(inputs[-1], full=full)[0][:, 1] >= self.detector_threshold
        n, classes = inputs[0].shape[0], len(self.class_map)
        probs = torch.zeros(n, classes)
        probs[:, self.class_map.noise_index] = 1.0
        hidden = None
        if pooled:           # windows the detector rejects have no features: zeros
            hidden = torch.zeros(n, int(self.models[0].spec.classifier_opts.get("input_channels", 0)))
        keep = detected.nonzero().view(-1)
        if len(keep):
            kept, kept_hidden = self.average([x[keep] for x in inputs[:-1]], pooled, full)
            probs[keep] = 0.0
            probs[keep, :kept.shape[1]] = kept
            if kept_hidden is not None:
                if hidden is None or hidden.shape[1] != kept_hidden.shape[1]:
                    hidden = torch.zeros(n, kept_hidden.shape[1])
                hidden[keep] = kept_hidden
        return probs, hidden

    def average(self, inputs: List[torch.Tensor], pooled: bool, full: bool = False):
        results = [member.backend(x, pooled and i == 0, full) for i, (member, x) in enumerate(zip(self.models, inputs))]
        probs = results[0][0] if len(results) == 1 else torch.stack([p for p, _ in results]).mean(dim=0)
        return probs, results[0][1]

    def ran_reduced(self) -> bool:
        """Whether the last batch ran (in part) in reduced precision."""
        return any(getattr(m.backend, "last_reduced", False) for m in self.members)

    def reference(self, first: int, inputs: List[torch.Tensor]) -> Optional[Reference]:
        """Every ``CHECK_EVERY``-th window of the batch in float32 (the same windows whatever
        the batch size)."""
        rows = [i for i in range(inputs[0].shape[0]) if (first + i) % CHECK_EVERY == 0]
        if not rows:
            return None
        probs, hidden = self.classify([x[rows] for x in inputs], self.needs_pooled, full=True)
        return Reference(rows, probs, self.unknown_flags(probs, hidden))

    def predict_file(self, path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probabilities (windows, classes), starts, ends)`` of a recording (seconds)."""
        probs, starts, ends = [], [], []
        for batch in self.stream(path):
            probs.append(batch.probs.numpy())
            starts += batch.starts
            ends += batch.ends
        return np.concatenate(probs), np.asarray(starts), np.asarray(ends)


def best_channel(streams) -> Iterator[WindowBatch]:
    """The window batches of several channels' streams, merged: per window the channel
    whose top class is most probable (its probabilities, features and input)."""
    for batches in zip(*streams):
        top = torch.stack([b.probs.max(dim=1).values for b in batches])          # (channels, B)
        best = top.argmax(dim=0)
        rows = torch.arange(best.shape[0])
        pick = lambda values: torch.stack(list(values))[best, rows] if values[0] is not None else None
        first = batches[0]
        unknown = None if first.unknown is None else [batches[int(c)].unknown[i] for i, c in enumerate(best)]
        yield WindowBatch(first.first, first.starts, first.ends, first.start_samples, first.end_samples,
                          pick([b.probs for b in batches]), pick([b.pooled for b in batches]),
                          pick([b.inputs for b in batches]), unknown, [int(c) + 1 for c in best],
                          best_reference([b.reference for b in batches]))


def best_reference(references: List[Optional[Reference]]) -> Optional[Reference]:
    """``--amp`` with ``--channels max``: the sampled windows in float32, each from the
    channel that float32 would have chosen (so the account compares the run's decision
    with float32's whole decision, channel choice included)."""
    if not references or any(r is None for r in references):
        return None
    top = torch.stack([r.probs.max(dim=1).values for r in references])               # (channels, rows)
    best = top.argmax(dim=0)
    probs = torch.stack([r.probs for r in references])[best, torch.arange(best.shape[0])]
    first = references[0]
    unknown = None if first.unknown is None else [references[int(c)].unknown[i] for i, c in enumerate(best)]
    return Reference(first.rows, probs, unknown)


def prefetch(iterator: Iterator, enabled: bool) -> Iterator:
    """Compute the next item in a thread while the caller works on the current one."""
    if not enabled:
        yield from iterator
        return
    sentinel = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(next, iterator, sentinel)
        while True:
            item = future.result()
            if item is sentinel:
                return
            future = pool.submit(next, iterator, sentinel)
            yield item
