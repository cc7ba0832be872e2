"""A model file opened for prediction: its description, its preprocessing and the backend
that runs it.

Backends: the PyTorch model (BatchNorm folded into the convolutions, inference mode,
the memory format and, with ``--amp``, the precision chosen by timing on this machine:
``prediction.precision.Trial``), a TorchScript file (``jit=True``), or an ONNX file
(onnxruntime). A backend maps network inputs to ``(float32 logits on the CPU, pooled
features or None)``; ``full=True`` runs float32 whatever the run chose.
"""

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..data.features import FeatureOptions
from ..data.recording import AudioOptions
from ..models.model_file import LoadedModel, ModelFileError, ModelSpec, load_model
from .precision import Trial
from ..utils.classmap import ClassMap
from ..utils.runtime import MEMORY_FORMATS, Forward, Precision

log = logging.getLogger("PREDICT")


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


def pooled_features(model: nn.Module):
    """The pooled encoder features of the model's last forward, or None."""
    return getattr(getattr(model, "classifier", None), "hidden_layer_1", None)


class TorchBackend:
    """A PyTorch (or TorchScript) model."""

    def __init__(self, loaded: LoadedModel, device: torch.device, precision: Precision = Precision(),
                 memory_format: str = "auto"):
        self.device, self.jit = device, loaded.jit
        model = loaded.model.eval()
        self.model = (model if loaded.jit else fuse_batchnorm(model)).to(device)
        # a traced model keeps the layout it was traced in
        self.trial = Trial.of("contiguous" if loaded.jit and memory_format == "auto" else memory_format, precision)
        self.applied = None
        self.last_reduced = False           # whether the last call ran in reduced precision

    @property
    def reduced(self) -> bool:
        """Whether this backend may run in reduced precision (``--amp``)."""
        return any(p.dtype is not None for _, p in self.trial.candidates)

    def __call__(self, inputs: torch.Tensor, pooled: bool = False, full: bool = False):
        logits, hidden = self.logits(inputs, pooled, full)
        return torch.softmax(logits, dim=1), hidden

    def logits(self, inputs: torch.Tensor, pooled: bool = False, full: bool = False):
        name, precision = self.trial.current
        if full:
            precision = Precision()
        if name != self.applied:
            self.model.to(memory_format=MEMORY_FORMATS[name])
            self.applied = name
        forward = Forward(self.device, precision, MEMORY_FORMATS[name])
        timing = self.trial.timing and not full       # only the trial's batches are timed (and synchronised)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = forward(self.model, inputs, fallback=True)
        if timing:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.trial.timed(time.perf_counter() - start, inputs.shape[0])
        self.last_reduced = precision.dtype is not None
        hidden = None
        if pooled:
            hidden = pooled_features(self.model)
            if hidden is None:
                raise ModelFileError("pooled features (--latent_extract, --unknown, embeddings) need a model file "
                                     "loaded without --jit_load or ONNX")
            hidden = hidden.float().cpu()
        return logits.float().cpu(), hidden


class OnnxBackend:
    """An exported ONNX file (``export.py``) run with onnxruntime; it outputs probabilities."""

    reduced = False
    last_reduced = False

    def __init__(self, path: str, device: torch.device):
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(path, providers=providers)
        except Exception as error:
            raise ModelFileError(f"{path}: not a usable ONNX model ({error})") from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, inputs: torch.Tensor, pooled: bool = False, full: bool = False):
        if pooled:
            raise ModelFileError("pooled features (--latent_extract) are not in an ONNX model")
        probs = self.session.run(None, {self.input: inputs.cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(probs), None


def load_onnx_spec(path: str) -> ModelSpec:
    """The model description stored as JSON in the ONNX file's metadata."""
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
        if AudioOptions.describes(spec.data_opts):
            how = "trained from" if spec.encoder_opts.get("trainable") else "a head on"
            log.info(f"{path}: {how} the foundation encoder {spec.encoder_opts.get('version')} (licence "
                     f"{spec.encoder_opts.get('licence')})")
            return cls(path, spec, AudioOptions.from_data_opts(spec.data_opts), backend)
        if min_max_norm and spec.train_opts and not spec.min_max_norm:
            log.warning(f"--min_max_norm is set but {path} was trained with 0/1-dB normalisation")
        options = FeatureOptions.from_data_opts(spec.data_opts, min_max_norm or spec.min_max_norm)
        return cls(path, spec, options, backend)
