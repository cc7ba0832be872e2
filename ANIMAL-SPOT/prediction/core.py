"""The prediction core: model files in, per-window class probabilities out.

``Predictor`` holds one model, or several (an ensemble: their probabilities are
averaged), and optionally a binary detector that decides which windows the classifier
sees. ``predictor.stream(path)`` yields a ``WindowBatch`` per batch of windows: the
windows' times and class probabilities (and the pooled encoder features when asked).
Each model computes its own spectrograms of the same windows, with its own data options.

Python use::

    from prediction.core import Predictor
    predictor = Predictor.from_files(["ANIMAL-SPOT.pk"], sequence_len=0.5, hop=0.25)
    probs, starts, ends = predictor.predict_file("recording.wav")   # NumPy arrays

Backends: the PyTorch model (BatchNorm folded, inference mode, optional autocast and
channels-last), a TorchScript file (``jit=True``), or an ONNX file (onnxruntime).
``exact_amp(at_risk)`` makes reduced precision decide as float32 (``ExactAmp``); with
``unknown=True`` each batch carries the first model's unknown flags; ``stream_max`` picks
per window the channel whose top class is most probable.
"""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from data.audio_io import SignalReader
from data.features import FeatureOptions
from data.recording import RecordingWindows, WindowGeometry
from models.model_file import LoadedModel, ModelFileError, ModelSpec, load_model
from utils.classmap import ClassMap
from utils.runtime import MEMORY_FORMATS, FormatTrial, Forward, Precision

log = logging.getLogger("PREDICT")
DEFAULT_SEQUENCE_LEN = 2.0      # seconds, the original's default


# ------------------------------------------------------------------------ backends
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution into it (eval mode only): named
    pairs ``convN``/``bnN`` and consecutive pairs inside a Sequential."""
    for module in list(model.modules()):
        children = dict(module.named_children())
        for name, child in children.items():
            partner = name.replace("conv", "bn", 1)
            if isinstance(child, nn.Conv2d) and partner != name and isinstance(children.get(partner), nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(child, children[partner]))
                setattr(module, partner, nn.Identity())
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (n1, m1), (n2, m2) in zip(items, items[1:]):
                if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                    module._modules[n1] = fuse_conv_bn_eval(m1, m2)
                    module._modules[n2] = nn.Identity()
    return model


class TorchBackend:
    """A PyTorch (or TorchScript) model: inputs -> (probabilities, pooled features or None)."""

    def __init__(self, loaded: LoadedModel, device: torch.device, precision: Precision, memory_format: str):
        self.device, self.precision, self.jit = device, precision, loaded.jit
        model = loaded.model.eval()
        self.model = (model if loaded.jit else fuse_batchnorm(model)).to(device)
        # a traced model keeps the layout it was traced in
        self.formats = FormatTrial(precision, "contiguous" if loaded.jit and memory_format == "auto" else memory_format)
        self.forward = Forward(device, precision)

    @property
    def reduced(self) -> bool:
        """Whether this backend runs in reduced precision (``--amp``)."""
        return self.precision.dtype is not None

    def __call__(self, inputs: torch.Tensor, pooled: bool = False, full: bool = False):
        logits, hidden = self.logits(inputs, pooled, full)
        return torch.softmax(logits, dim=1), hidden

    def logits(self, inputs: torch.Tensor, pooled: bool = False, full: bool = False):
        """``(float32 logits on the CPU, pooled features or None)``; ``full``: in float32
        whatever the run's precision."""
        name = self.formats.format_for(self.model)
        self.forward.memory_format = MEMORY_FORMATS[name]
        trial = self.formats.chosen is None and not full  # only the trial's batches are timed (and synchronised)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = self.forward.float32(self.model, inputs) if full else self.forward(self.model, inputs,
                                                                                          fallback=True)
        if trial:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.formats.timed(name, time.perf_counter() - start, inputs.shape[0])
        logits = logits.float().cpu()
        hidden = None
        if pooled:
            hidden = getattr(getattr(self.model, "classifier", None), "hidden_layer_1", None)
            if hidden is None:
                raise ModelFileError("pooled features (--latent_extract, --unknown) need a model file loaded "
                                     "without --jit_load or ONNX")
            hidden = hidden.float().cpu()
        return logits, hidden


class OnnxBackend:
    """An exported ONNX file (``export.py``) run with onnxruntime; it outputs probabilities."""

    def __init__(self, path: str, device: torch.device):
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(path, providers=providers)
        except Exception as error:
            raise ModelFileError(f"{path}: not a usable ONNX model ({error})") from None
        self.input = self.session.get_inputs()[0].name

    reduced = False

    def __call__(self, inputs: torch.Tensor, pooled: bool = False, full: bool = False):
        if pooled:
            raise ModelFileError("pooled features (--latent_extract) are not in an ONNX model")
        probs = self.session.run(None, {self.input: inputs.cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(probs), None


def load_onnx_spec(path: str) -> ModelSpec:
    """The model description stored as JSON in the ONNX file's metadata."""
    import json

    import onnx

    try:
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        return ModelSpec(**{k: json.loads(meta[k]) for k in json.loads(meta["animal_spot_keys"])})
    except Exception as error:
        raise ModelFileError(f"{path}: not an ONNX file written by export.py ({error})") from None


@dataclass
class PredictionModel:
    """One model of a prediction: its description, preprocessing and backend."""

    path: str
    spec: ModelSpec
    options: FeatureOptions
    backend: object

    @property
    def class_map(self) -> ClassMap:
        return self.spec.class_map

    @classmethod
    def open(cls, path: str, device: torch.device = torch.device("cpu"), jit: bool = False,
             precision: Precision = Precision(), memory_format: str = "auto",
             min_max_norm: bool = False) -> "PredictionModel":
        if path.lower().endswith(".onnx"):
            if not os.path.isfile(path):
                raise ModelFileError(f"{path}: model file not found")
            spec, backend = load_onnx_spec(path), OnnxBackend(path, device)
        else:
            loaded = load_model(path, jit=jit, device=device)
            spec, backend = loaded.spec, TorchBackend(loaded, device, precision, memory_format)
        if spec.num_classes < 2:
            raise ModelFileError(f"{path}: not a valid number of classes! ({spec.num_classes})")
        if min_max_norm and spec.train_opts and not spec.min_max_norm:
            log.warning(f"--min_max_norm is set but {path} was trained with 0/1-dB normalisation")
        options = FeatureOptions.from_data_opts(spec.data_opts, min_max_norm or spec.min_max_norm)
        return cls(path, spec, options, backend)


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
class WindowBatch:
    first: int                          # index of the first window
    starts: List[float]                 # seconds, rounded to 3 decimals as logged
    ends: List[float]
    start_samples: List[int]
    end_samples: List[int]
    probs: torch.Tensor                 # (B, classes) float32
    pooled: Optional[torch.Tensor]      # (B, C) of the (first) classifier, when asked
    inputs: torch.Tensor                # (B, 1, T, F) network input of the (first) classifier
    unknown: Optional[List[bool]] = None    # beyond the first model's unknown threshold (--unknown)
    channels: Optional[List[int]] = None    # per window, the channel it came from (--channels max)


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
        self.guard: Optional["ExactAmp"] = None         # set by exact_amp()
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

    # ------------------------------------------------------------------- windows
    def geometry(self, reader: SignalReader) -> WindowGeometry:
        return WindowGeometry.from_seconds(self.sequence_len, self.hop, reader.sr, reader.n_samples)

    def window_sets(self, path: str, reader: Optional[SignalReader] = None, channel: Optional[int] = None
                    ) -> List[RecordingWindows]:
        """The windows of ``path`` for every model (``window_sets``)."""
        return window_sets(self, path, reader, channel)

    def exact_amp(self, at_risk) -> Optional["ExactAmp"]:
        """Make reduced precision decide as float32 (``at_risk(probs, rho)``: the rows whose
        decision could change when every probability may be off by a factor ``rho``);
        None when no model runs in reduced precision."""
        members = self.models + ([self.detector] if self.detector else [])
        if any(getattr(m.backend, "reduced", False) for m in members):
            self.guard = ExactAmp(at_risk)
        return self.guard

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
            spans = [geometry.span(i) for i in range(first, first + probs.shape[0])]
            seconds = [geometry.seconds(i) for i in range(first, first + probs.shape[0])]
            yield WindowBatch(first, [s for s, _ in seconds], [e for _, e in seconds], [s for s, _ in spans],
                              [e for _, e in spans], probs, hidden if pooled else None, inputs[0],
                              self.unknown_flags(probs, hidden))

    def stream_max(self, path: str, channels: int, pooled: bool = False) -> Iterator[WindowBatch]:
        """``--channels max``: every channel predicted; per window, the channel whose top
        class is most probable (``best_channel``)."""
        return best_channel([self.stream(path, pooled, channel=c) for c in range(1, channels + 1)])

    def unknown_flags(self, probs: torch.Tensor, hidden: Optional[torch.Tensor]) -> Optional[List[bool]]:
        if not self.unknown:
            return None
        from evaluation.calibration import is_unknown

        features = None if hidden is None else hidden.double().numpy()
        return [bool(v) for v in is_unknown(self.unknown, features, probs.double().numpy())]

    def classify(self, inputs: List[torch.Tensor], pooled: bool):
        """Probabilities of one batch (inputs per model, the detector's last)."""
        try:
            return self._classify(inputs, pooled)
        finally:
            if self.guard is not None:
                self.guard.batches += 1

    def _classify(self, inputs: List[torch.Tensor], pooled: bool):
        if self.detector is None:
            return self.average(inputs, pooled)
        detected = self.detector_target(inputs[-1]) >= self.detector_threshold
        n, classes = inputs[0].shape[0], len(self.class_map)
        probs = torch.zeros(n, classes)
        probs[:, self.class_map.noise_index] = 1.0
        hidden = None
        if pooled:           # windows the detector rejects have no features: zeros
            hidden = torch.zeros(n, int(self.models[0].spec.classifier_opts.get("input_channels", 0)))
        keep = detected.nonzero().view(-1)
        if len(keep):
            kept, kept_hidden = self.average([x[keep] for x in inputs[:-1]], pooled)
            probs[keep] = 0.0
            probs[keep, :kept.shape[1]] = kept
            if kept_hidden is not None:
                if hidden is None or hidden.shape[1] != kept_hidden.shape[1]:
                    hidden = torch.zeros(n, kept_hidden.shape[1])
                hidden[keep] = kept_hidden
        return probs, hidden

    def detector_target(self, inputs: torch.Tensor) -> torch.Tensor:
        """The detector's p(target) (under the exact ``--amp`` guard, float32 near its gate)."""
        if self.guard is None or not getattr(self.detector.backend, "reduced", False):
            return self.detector.backend(inputs)[0][:, 1]
        return self.guard.detector_target(self, inputs)

    def average(self, inputs: List[torch.Tensor], pooled: bool):
        if self.guard is None or not any(getattr(m.backend, "reduced", False) for m in self.models):
            results = [member.backend(x, pooled and i == 0) for i, (member, x) in enumerate(zip(self.models, inputs))]
            probs = results[0][0] if len(results) == 1 else torch.stack([p for p, _ in results]).mean(dim=0)
            return probs, results[0][1]
        return self.guard.average(self, inputs, pooled or self.needs_pooled)

    def unknown_distance(self, hidden: torch.Tensor) -> np.ndarray:
        from evaluation.calibration import unknown_scores

        if self.unknown.get("score") != "centroid_distance":
            return np.zeros(len(hidden))
        return unknown_scores(self.unknown, hidden.double().numpy())

    def predict_file(self, path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probabilities (windows, classes), starts, ends)`` of a recording (seconds)."""
        probs, starts, ends = [], [], []
        for batch in self.stream(path):
            probs.append(batch.probs.numpy())
            starts += batch.starts
            ends += batch.ends
        return np.concatenate(probs), np.asarray(starts), np.asarray(ends)


def window_sets(predictor: "Predictor", path: str, reader: Optional[SignalReader] = None,
                channel: Optional[int] = None) -> List[RecordingWindows]:
    """The windows of ``path`` (one ``channel``, 1-based, or the channels' mean) for every
    model and the detector (the first model's count for all)."""
    members = predictor.models + ([predictor.detector] if predictor.detector else [])
    sets, count = [], None
    for member in members:
        own = reader if reader is not None and reader.sr == member.options.sr else None
        windows = RecordingWindows(path, member.options, predictor.sequence_len, predictor.hop,
                                   predictor.batch_size, own, predictor.device, count, channel)
        count = windows.geometry.count if count is None else count
        sets.append(windows)
    return sets


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
                          pick([b.inputs for b in batches]), unknown, [int(c) + 1 for c in best])


class ExactAmp:
    """The measured error of reduced precision and the windows it could change.

    The first ``CALIBRATION`` batches run in both precisions; the largest absolute
    difference of any logit, times ``SAFETY``, is the bound ``delta`` taken for every later
    window (it keeps growing if a recomputed window shows a larger difference). Logits
    within +-delta move every softmax probability by at most a factor ``rho = exp(2
    delta)`` (an average of models by at most the largest factor), so a decision taken on
    probabilities that stays the same for every probability within that factor is the
    float32 decision: the caller's ``at_risk`` names the others, which are recomputed in
    float32 (as are the windows near the unknown threshold, by the same rule on its
    distance)."""

    CALIBRATION = 2
    SAFETY = 4.0
    FLOOR = 1e-6

    def __init__(self, at_risk):
        self.at_risk_fn = at_risk
        self.error: Dict = {}
        self.unknown_error = 0.0
        self.batches = 0
        self.windows = 0
        self.recomputed = 0

    @property
    def calibrating(self) -> bool:
        return self.batches < self.CALIBRATION

    def observe(self, key, low: torch.Tensor, full: torch.Tensor) -> None:
        if len(low):
            self.error[key] = max(self.error.get(key, 0.0), float((low - full).abs().max()))

    def observe_unknown(self, low: np.ndarray, full: np.ndarray) -> None:
        if len(low):
            self.unknown_error = max(self.unknown_error, float(np.abs(low - full).max()))

    def delta(self, key) -> float:
        return self.SAFETY * max(self.error.get(key, 0.0), self.FLOOR)

    def rho(self, key) -> float:
        return float(np.exp(2 * self.delta(key)))

    def at_risk(self, probs: np.ndarray, rho: float) -> np.ndarray:
        return np.asarray(self.at_risk_fn(probs, rho), dtype=bool)

    def unknown_at_risk(self, distance: np.ndarray, threshold: float) -> np.ndarray:
        return np.abs(distance - threshold) <= self.SAFETY * max(self.unknown_error, self.FLOOR)

    def count(self, windows: int, recomputed: int) -> None:
        self.windows += windows
        self.recomputed += recomputed

    # ------------------------------------------------------------- the passes
    @staticmethod
    def _run(models, inputs: List[torch.Tensor], pooled: bool, full: bool, rows=None):
        """Every member's logits (and the first one's features) of ``rows``."""
        pick = (lambda x: x) if rows is None else (lambda x: x[rows])
        return [member.backend.logits(pick(x), pooled and i == 0, full)
                for i, (member, x) in enumerate(zip(models, inputs))]

    @staticmethod
    def _mean_probs(results) -> torch.Tensor:
        probs = [torch.softmax(logits, dim=1) for logits, _ in results]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)

    def average(self, predictor, inputs: List[torch.Tensor], pooled: bool):
        """The ensemble's probabilities of one batch as float32 would decide them: every
        member in reduced precision; the calibration batches also in float32; afterwards the
        windows at risk recomputed in float32."""
        models = predictor.models
        low = self._run(models, inputs, pooled, False)
        if self.calibrating:
            full = self._run(models, inputs, pooled, True)
            for i, ((a, ha), (b, hb)) in enumerate(zip(low, full)):
                self.observe(i, a, b)
                if i == 0 and ha is not None and predictor.unknown:
                    self.observe_unknown(predictor.unknown_distance(ha), predictor.unknown_distance(hb))
            self.count(inputs[0].shape[0], inputs[0].shape[0])
            return self._mean_probs(full), full[0][1]
        probs, hidden = self._mean_probs(low), low[0][1]
        risky = self.at_risk(probs.double().numpy(), max(self.rho(i) for i in range(len(models))))
        if predictor.unknown and hidden is not None:
            risky |= self.unknown_at_risk(predictor.unknown_distance(hidden), float(predictor.unknown["threshold"]))
        rows = torch.from_numpy(np.flatnonzero(risky))
        if len(rows):
            full = self._run(models, inputs, pooled, True, rows)
            for i, ((a, _), (b, _)) in enumerate(zip(low, full)):
                self.observe(i, a[rows], b)
            probs[rows] = self._mean_probs(full)
            if hidden is not None and full[0][1] is not None:
                hidden[rows] = full[0][1]
        self.count(inputs[0].shape[0], len(rows))
        return probs, hidden

    def detector_target(self, predictor, inputs: torch.Tensor) -> torch.Tensor:
        """The detector's p(target), recomputed in float32 where it is near the gate."""
        backend = predictor.detector.backend
        low = backend.logits(inputs)[0]
        if self.calibrating:
            full = backend.logits(inputs, full=True)[0]
            self.observe("detector", low, full)
            return torch.softmax(full, dim=1)[:, 1]
        target = torch.softmax(low, dim=1)[:, 1]
        rho, limit = self.rho("detector"), predictor.detector_threshold
        risky = ((target * rho >= limit) & (target / rho < limit)).nonzero().view(-1)
        if len(risky):
            full = backend.logits(inputs[risky], full=True)[0]
            self.observe("detector", low[risky], full)
            target[risky] = torch.softmax(full, dim=1)[:, 1]
        return target

    def report(self) -> str:
        share = 100 * self.recomputed / max(1, self.windows)
        bounds = ", ".join(f"{'detector' if k == 'detector' else f'model {k + 1}'} +-{self.delta(k):.2g}"
                           for k in self.error)
        return (f"--amp: {self.recomputed} of {self.windows} windows ({share:.1f} %) computed in float32 "
                f"(the first {self.CALIBRATION} batches, and where the reduced-precision error could change a "
                f"decision; logit bounds {bounds or 'none'})")


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
