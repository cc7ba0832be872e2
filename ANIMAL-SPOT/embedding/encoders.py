"""Which model embeds a store, and how to get it back from the store's description.

Three kinds: a model file trained here (its pooled encoder features; ``--model_path``),
an untrained registered backbone (ImageNet weights; ``--backbone NAME``, with the
spectrogram settings of ``TEMPLATE``), and a foundation encoder (``--backbone birdnet``,
``batdetect2``, ``onnx:PATH``, ``torchscript:PATH``; ``models.foundation``: raw audio at
its own sample rate and window). The store describes its model (``store.json``:
``model`` names it, its weights' SHA-256, and for a foundation encoder its version and
licence), so heads, audio queries and the review rebuild it from the store alone.
"""

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from ..data.features import FeatureOptions
from ..data.recording import AudioOptions
from .store import Store, StoreDescription, StoreError
from ..models import backbones, foundation
from ..models.model_file import LoadedModel, ModelSpec, classifier_options, load_model
from ..prediction.backends import PredictionModel, TorchBackend
from ..utils.paths import file_sha256
from ..utils.runtime import Precision

log = logging.getLogger("EMBED")
TEMPLATE = {"sr": 44100, "n_fft": 1024, "hop_length": 172, "n_freq_bins": 256, "fmin": 500, "fmax": 10000,
            "freq_compression": "linear"}          # the training scripts' settings (and their 0.5 s segments)


@dataclass
class Choice:
    """What the user chose to embed with (``embed.py``'s flags)."""

    model_path: Optional[str] = None
    backbone: Optional[str] = None
    pretrained_weights: Optional[str] = None
    sequence_len: Optional[float] = None             # registered backbones: the window
    spectrogram: Optional[Dict] = None               # registered backbones: TEMPLATE's keys given
    encoder: Optional[Dict] = None                   # onnx/torchscript: sample_rate, window


def backbone_spec(name: str, spectrogram: Optional[Dict], window: Optional[float]) -> ModelSpec:
    """A registered backbone with a two-class head, its spectrogram settings and window."""
    backbone = backbones.get(name)
    options = FeatureOptions(**{k: (spectrogram or {}).get(k) if (spectrogram or {}).get(k) is not None else v
                                for k, v in TEMPLATE.items()})
    encoder_opts = dict(backbone.defaults, backbone=backbone.name)
    return ModelSpec(encoder_opts, classifier_options(encoder_opts, 2), options.data_opts(),
                     train_opts={"sequence_len": 1000 * (window or 0.5)})


def foundation_spec(encoder_opts: Dict) -> ModelSpec:
    audio = AudioOptions(int(encoder_opts["sample_rate"]), float(encoder_opts["window"]))
    return ModelSpec(encoder_opts, classifier_options(encoder_opts, 2), audio.data_opts(),
                     train_opts={"sequence_len": 1000 * audio.window})


def opened(spec: ModelSpec, network, path: str, device, precision: Precision, memory_format: str) -> PredictionModel:
    audio = AudioOptions.describes(spec.data_opts)
    backend = TorchBackend(LoadedModel(network.eval(), spec), device, precision,
                           "contiguous" if audio else memory_format)
    options = AudioOptions.from_data_opts(spec.data_opts) if audio else \
        FeatureOptions.from_data_opts(spec.data_opts, spec.min_max_norm)
    return PredictionModel(path, spec, options, backend)


def choose(choice: Choice, device=torch.device("cpu"), precision: Precision = Precision(),
           memory_format: str = "auto") -> Tuple[PredictionModel, StoreDescription]:
    """The prediction model whose pooled features are the embedding, and the store's
    description of it (without the window and hop, which the run adds)."""
    if bool(choice.model_path) == bool(choice.backbone):
        raise ValueError("give --model_path (a trained model) or --backbone (an untrained one or a foundation "
                         "encoder), not both")
    if choice.model_path:
        model = PredictionModel.open(choice.model_path, device, False, precision, memory_format)
        identity = {"file": os.path.abspath(choice.model_path), "sha256": file_sha256(choice.model_path)}
    elif foundation.is_foundation(choice.backbone):
        identity = foundation.encoder_options(choice.backbone, choice.encoder)
        spec = foundation_spec(identity)
        model = opened(spec, spec.build(), f"backbone:{identity['backbone']}", device, precision, memory_format)
        log.info(f"Encoder {identity['version']}: {identity['window']:g} s at {identity['sample_rate']} Hz -> "
                 f"{identity['dim']} values; licence {identity['licence']} (it binds every use of its embeddings "
                 "and of heads fitted on them)")
    else:
        spec = backbone_spec(choice.backbone, choice.spectrogram, choice.sequence_len)
        network = spec.build(pretrained=True, weights_path=choice.pretrained_weights)
        model = opened(spec, network, f"backbone:{spec.backbone}", device, precision, memory_format)
        weights = file_sha256(choice.pretrained_weights) if choice.pretrained_weights else \
            "the library's ImageNet weights"
        identity = {"backbone": spec.backbone, "weights": weights, "weights_path":
                    os.path.abspath(choice.pretrained_weights) if choice.pretrained_weights else None}
    description = StoreDescription(identity, dict(model.spec.data_opts), bool(model.options.min_max_norm),
                                   int(model.spec.classifier_opts.get("input_channels")),
                                   classes=model.class_map.to_dict(), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   torch=str(torch.__version__))
    return model, description


def store_model(store: Store, model_path: Optional[str] = None, memory_format: str = "contiguous") -> LoadedModel:
    """The store's embedding model, rebuilt from its description (a trained model from its
    file, checked against the stored SHA-256; ``model_path`` where the file moved)."""
    identity = store.description.model
    if "backbone" in identity and foundation.is_foundation(identity["backbone"]):
        spec = foundation_spec(identity)
        return LoadedModel(spec.build().eval(), spec)
    if "backbone" in identity:
        spec = backbone_spec(identity["backbone"], store.description.data_opts, store.description.window)
        spec = dataclasses.replace(spec, data_opts=dict(store.description.data_opts),
                                   train_opts=dict(spec.train_opts, min_max_norm=store.description.min_max_norm))
        return LoadedModel(spec.build(True, identity.get("weights_path")).eval(), spec)
    path = model_path or identity.get("file")
    if not path or not os.path.isfile(path):
        raise StoreError(f"the store's model {identity.get('file')} is not there: pass --model_path")
    if identity.get("sha256") != file_sha256(path):
        raise StoreError(f"{path} is not the model the store {store.root} was made with")
    return load_model(path)


def store_predictor_model(store: Store, model_path: Optional[str] = None) -> PredictionModel:
    """The store's model ready to embed more audio (a clip query, labelled clips)."""
    loaded = store_model(store, model_path)
    return opened(loaded.spec, loaded.model, loaded.path or "store model", torch.device("cpu"), Precision(),
                  "contiguous")
