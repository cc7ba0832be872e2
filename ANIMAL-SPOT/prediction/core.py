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
"""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

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

    def __call__(self, inputs: torch.Tensor, pooled: bool = False):
        name = self.formats.format_for(self.model)
        self.forward.memory_format = MEMORY_FORMATS[name]
        trial = self.formats.chosen is None        # only the trial's batches are timed (and synchronised)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = self.forward(self.model, inputs, fallback=True)
        if trial:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.formats.timed(name, time.perf_counter() - start, inputs.shape[0])
        probs = torch.softmax(logits, dim=1).cpu()
        hidden = None
        if pooled:
            hidden = getattr(getattr(self.model, "classifier", None), "hidden_layer_1", None)
            if hidden is None:
                raise ModelFileError("pooled features (--latent_extract, --unknown) need a model file loaded "
                                     "without --jit_load or ONNX")
            hidden = hidden.float().cpu()
        return probs, hidden


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

    def __call__(self, inputs: torch.Tensor, pooled: bool = False):
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
        if unknown and not self.unknown:
            raise ModelFileError(f"{models[0].path}: --unknown needs a model trained by this version (its file "
                                 "holds no unknown threshold)")
        first = self.models[0]
        for other in self.models[1:]:
            if not other.class_map.same_classes(first.class_map):
                raise ModelFileError(f"the ensemble's models have different classes: {first.path} "
                                     f"{first.class_map.to_dict()} and {other.path} {other.class_map.to_dict()} "
                                     f"({first.class_map.describe_difference(other.class_map)})")
        self.class_map = self.output_class_map(first.class_map, detector)
        self.sequence_len = sequence_len if sequence_len is not None else self.model_sequence_len(first.spec)
        self.hop, self.batch_size, self.prefetch = hop, batch_size, prefetch
        if detector is not None:
            if not detector.class_map.is_binary:
                raise ModelFileError(f"{detector.path}: a detector must be a binary (target/noise) model")
            stored = (detector.spec.thresholds or {}).get("target")
            self.detector_threshold = detector_threshold if detector_threshold is not None else (stored or 0.5)

    @staticmethod
    def model_sequence_len(spec: ModelSpec) -> float:
        """The training segment length (seconds) of a model of this project, else 2 s."""
        ms = (spec.train_opts or {}).get("sequence_len")
        return float(ms) / 1000 if ms else DEFAULT_SEQUENCE_LEN

    @staticmethod
    def output_class_map(classes: ClassMap, detector: Optional[PredictionModel]) -> ClassMap:
        """With a detector, the classifier's classes plus ``noise`` when it has none."""
        if detector is None or classes.noise_index is not None:
            return classes
        names = classes.names + ["noise"]
        return ClassMap(tuple((name, i) for i, name in enumerate(names)))

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
        """The windows of ``path`` (one ``channel``, 1-based, or the channels' mean) for every
        model (the first model's count for all)."""
        members = self.models + ([self.detector] if self.detector else [])
        sets, count = [], None
        for member in members:
            own = reader if reader is not None and reader.sr == member.options.sr else None
            windows = RecordingWindows(path, member.options, self.sequence_len, self.hop, self.batch_size,
                                       own, self.device, count, channel)
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
            spans = [geometry.span(i) for i in range(first, first + probs.shape[0])]
            seconds = [geometry.seconds(i) for i in range(first, first + probs.shape[0])]
            yield WindowBatch(first, [s for s, _ in seconds], [e for _, e in seconds], [s for s, _ in spans],
                              [e for _, e in spans], probs, hidden if pooled else None, inputs[0],
                              self.unknown_flags(probs, hidden))

    def stream_max(self, path: str, channels: int, pooled: bool = False) -> Iterator[WindowBatch]:
        """``--channels max``: every channel predicted; per window, the channel whose top
        class is most probable."""
        streams = [self.stream(path, pooled, channel=c) for c in range(1, channels + 1)]
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

    def unknown_flags(self, probs: torch.Tensor, hidden: Optional[torch.Tensor]) -> Optional[List[bool]]:
        if not self.unknown:
            return None
        from evaluation.calibration import is_unknown

        features = None if hidden is None else hidden.double().numpy()
        return [bool(v) for v in is_unknown(self.unknown, features, probs.double().numpy())]

    def classify(self, inputs: List[torch.Tensor], pooled: bool):
        """Probabilities of one batch (inputs per model, the detector's last)."""
        if self.detector is None:
            return self.average(inputs, pooled)
        detected = self.detector.backend(inputs[-1])[0][:, 1] >= self.detector_threshold
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

    def average(self, inputs: List[torch.Tensor], pooled: bool):
        results = [member.backend(x, pooled and i == 0) for i, (member, x) in enumerate(zip(self.models, inputs))]
        probs = results[0][0] if len(results) == 1 else torch.stack([p for p, _ in results]).mean(dim=0)
        return probs, results[0][1]

    def predict_file(self, path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probabilities (windows, classes), starts, ends)`` of a recording (seconds)."""
        probs, starts, ends = [], [], []
        for batch in self.stream(path):
            probs.append(batch.probs.numpy())
            starts += batch.starts
            ends += batch.ends
        return np.concatenate(probs), np.asarray(starts), np.asarray(ends)


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
