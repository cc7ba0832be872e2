"""The model file ``ANIMAL-SPOT.pk``: everything needed to rebuild the network and its
preprocessing.

Keys as the original (encoderOpts, classifierOpts, dataOpts, encoderState,
classifierState, classes); the backbone's name and options live inside encoderOpts, and
``trainOpts`` adds what the original forgot (min-max normalisation, segment length), so
prediction needs no flag that training already knew. ResNet files stay loadable by the
original's predict.py (same keys and option names; extra keys are ignored there).
"""

import ast
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn as nn

from models import backbones
from models.classifier import Classifier
from utils.checkpoints import atomic_save, safe_load

DEFAULT_CLASSES = {"noise": 0, "target": 1}
JIT_EXTRA_FILES = ("dataOpts", "encoderOpts", "classifierOpts", "classes", "trainOpts", "transforms")


class ModelFileError(RuntimeError):
    """A model file cannot be used; the message names it."""


def build_model(encoder_opts: dict, classifier_opts: dict, pretrained: bool = False,
                weights_path: Optional[str] = None) -> nn.Sequential:
    encoder = backbones.build_encoder(encoder_opts, pretrained, weights_path)
    return nn.Sequential(OrderedDict(encoder=encoder, classifier=Classifier(classifier_opts)))


@dataclass
class LoadedModel:
    model: nn.Module
    data_opts: Dict
    classes: Dict[str, int]
    encoder_opts: Dict = field(default_factory=dict)
    classifier_opts: Dict = field(default_factory=dict)
    train_opts: Dict = field(default_factory=dict)
    jit: bool = False

    @property
    def num_classes(self) -> int:
        return int(self.classifier_opts.get("num_classes", len(self.classes)))


def save_model(path: str, model: nn.Sequential, encoder_opts: dict, classifier_opts: dict,
               data_opts: dict, classes: dict, train_opts: Optional[dict] = None) -> None:
    state = {
        "encoderOpts": dict(encoder_opts),
        "classifierOpts": dict(classifier_opts),
        "dataOpts": dict(data_opts),
        "encoderState": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
        "classifierState": {k: v.detach().cpu() for k, v in model.classifier.state_dict().items()},
        "classes": dict(classes),
    }
    if train_opts:
        state["trainOpts"] = dict(train_opts)
    atomic_save(state, path)


def save_jit_model(path: str, model: nn.Sequential, example: torch.Tensor, encoder_opts: dict,
                   classifier_opts: dict, data_opts: dict, classes: dict, train_opts: dict,
                   transforms: dict) -> None:
    """TorchScript trace (on the CPU, eval mode) with JSON extra files."""
    model = model.cpu().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)   # TorchScript is the original's format
        traced = torch.jit.trace(model, example.cpu())
    extra = {"dataOpts": data_opts, "encoderOpts": encoder_opts, "classifierOpts": classifier_opts,
             "classes": classes, "trainOpts": train_opts, "transforms": transforms}
    tmp = f"{path}.{os.getpid()}.tmp"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(traced, tmp, _extra_files={k: json.dumps(v) for k, v in extra.items()})
    os.replace(tmp, path)


def _parse_extra(text: str, name: str, path: str):
    """JSON (ours) or a Python literal (the original's ``str()`` of a dict)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ModelFileError(f"{path}: extra file {name!r} is neither JSON nor a Python literal") from None


def load_model(path: str, jit: bool = False, device: torch.device = torch.device("cpu")) -> LoadedModel:
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: model file not found")
    if jit:
        extra = {name: "" for name in JIT_EXTRA_FILES}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                model = torch.jit.load(path, map_location=device, _extra_files=extra)
        except Exception as error:
            raise ModelFileError(f"{path}: not a TorchScript model ({error})") from None
        parsed = {k: _parse_extra(v, k, path) for k, v in extra.items()}
        if parsed["dataOpts"] is None:
            raise ModelFileError(f"{path}: TorchScript model without 'dataOpts'")
        classes = parsed["classes"] or dict(DEFAULT_CLASSES)
        return LoadedModel(model.eval(), parsed["dataOpts"], classes, parsed["encoderOpts"] or {},
                           parsed["classifierOpts"] or {"num_classes": len(classes)},
                           parsed["trainOpts"] or {}, jit=True)
    try:
        state = safe_load(path)
    except Exception as error:
        raise ModelFileError(f"{path}: cannot load as a model dictionary ({error}); "
                             "TorchScript files need --jit_load") from None
    missing = [k for k in ("encoderOpts", "classifierOpts", "dataOpts", "encoderState", "classifierState")
               if k not in state]
    if missing:
        raise ModelFileError(f"{path}: not an ANIMAL-SPOT model file (missing {', '.join(missing)})")
    model = build_model(state["encoderOpts"], state["classifierOpts"])
    try:
        model.encoder.load_state_dict(state["encoderState"])
        model.classifier.load_state_dict(state["classifierState"])
    except RuntimeError as error:
        raise ModelFileError(f"{path}: weights do not fit the network described in the file ({error})") from None
    classes = state.get("classes") or dict(DEFAULT_CLASSES)
    return LoadedModel(model.to(device).eval(), state["dataOpts"], classes, state["encoderOpts"],
                       state["classifierOpts"], state.get("trainOpts") or {})
