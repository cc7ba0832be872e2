"""The model file ``ANIMAL-SPOT.pk``: one ``ModelSpec`` (what rebuilds the network and its
preprocessing) plus the weights.

Layout: the original's keys first and unchanged (``encoderOpts``, ``classifierOpts``,
``dataOpts``, ``encoderState``, ``classifierState``, ``classes``), so the original's
``predict.py`` still reads our ResNet files; then ``trainOpts`` (segment length,
normalisation and the options of the run), ``thresholds`` and ``temperature`` (chosen
on validation), ``provenance`` (version, libraries, command line, split hash) and
``formatVersion``. The backbone's name and options live inside ``encoderOpts``.

Loading is safe (``torch.load(weights_only=True)``; TorchScript extra files are JSON, or
Python literals for the original's files, never evaluated as code) and migrates older
layouts: the original's files (no backbone name: a ResNet), this project's files before
``formatVersion``, and the seed fork's ConvNeXt files (``encoderOpts = {input_channels,
pretrained}``, keys ``backbone.features.*``, no final LayerNorm). A file of a newer
format is refused with a clear error.
"""

import ast
import json
import os
import subprocess
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from . import backbones
from .classifier import Classifier, DefaultClassifierOpts
from ..utils.atomic import atomic_torch_save, atomic_write
from ..utils.checkpoints import load_failure
from ..utils.classmap import DEFAULT_BINARY, ClassMap

FORMAT_VERSION = 2
ORIGINAL_KEYS = ("encoderOpts", "classifierOpts", "dataOpts", "encoderState", "classifierState", "classes")
PROJECT = "ANIMAL-SPOT fork with pluggable backbones"


class ModelFileError(RuntimeError):
    """A model file cannot be used; the message names it."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything a model file says besides its weights (frozen: a changed spec is a new
    one, ``dataclasses.replace``)."""

    encoder_opts: Dict
    classifier_opts: Dict
    data_opts: Dict
    classes: Dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BINARY))
    train_opts: Dict = field(default_factory=dict)
    thresholds: Optional[Dict[str, float]] = None
    temperature: Optional[float] = None
    provenance: Dict = field(default_factory=dict)
    unknown: Optional[Dict] = None          # {"score", "threshold", "false_rejection"} (predict.py --unknown)
    card: Optional[Dict] = None             # the model card's facts (models/model_card.py)

    @property
    def backbone(self) -> str:
        return backbones.backbone_name(self.encoder_opts)

    @property
    def class_map(self) -> ClassMap:
        return ClassMap.from_dict(self.classes)

    @property
    def num_classes(self) -> int:
        return int(self.classifier_opts.get("num_classes", len(self.class_map)))

    @property
    def min_max_norm(self) -> bool:
        return bool(self.train_opts.get("min_max_norm", False))

    def build(self, pretrained: bool = False, weights_path: Optional[str] = None) -> nn.Sequential:
        return build_model(self.encoder_opts, self.classifier_opts, pretrained, weights_path)

    # ---------------------------------------------------------------- file layout
    def to_state(self, model: nn.Module) -> dict:
        state = OrderedDict()
        state["encoderOpts"] = dict(self.encoder_opts)
        state["classifierOpts"] = dict(self.classifier_opts)
        state["dataOpts"] = dict(self.data_opts)
        state["encoderState"] = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
        state["classifierState"] = {k: v.detach().cpu() for k, v in model.classifier.state_dict().items()}
        state["classes"] = dict(self.classes)
        state.update(self.extras())
        return dict(state)

    def extras(self) -> dict:
        """The keys after the original's."""
        extra = {"trainOpts": dict(self.train_opts)}
        if self.thresholds is not None:
            extra["thresholds"] = {str(k): float(v) for k, v in self.thresholds.items()}
        if self.temperature is not None:
            extra["temperature"] = float(self.temperature)
        extra["provenance"] = dict(self.provenance)
        if self.unknown is not None:
            extra["unknown"] = dict(self.unknown)
        if self.card is not None:
            extra["modelCard"] = dict(self.card)
        extra["formatVersion"] = FORMAT_VERSION
        return extra

    @classmethod
    def from_state(cls, state: dict, path: str = "model file") -> Tuple["ModelSpec", dict, dict]:
        """``(spec, encoder state, classifier state)`` of a loaded file, migrated."""
        if not isinstance(state, dict):
            raise ModelFileError(f"{path}: not an ANIMAL-SPOT model file (a {type(state).__name__}, not a dict)")
        version = state.get("formatVersion", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(f"{path}: written by a newer version of this project (formatVersion {version}); "
                                 f"this version reads formats up to {FORMAT_VERSION}. Update the project.")
        missing = [k for k in ORIGINAL_KEYS[:5] if k not in state]
        if missing:
            raise ModelFileError(f"{path}: not an ANIMAL-SPOT model file (missing {', '.join(missing)})")
        encoder_opts, encoder_state = dict(state["encoderOpts"]), dict(state["encoderState"])
        if version < 2 and is_seed_convnext(encoder_opts, encoder_state):
            encoder_opts, encoder_state = seed_convnext_encoder(encoder_opts, encoder_state)
        spec = cls(encoder_opts, dict(state["classifierOpts"]), dict(state["dataOpts"]),
                   dict(state.get("classes") or DEFAULT_BINARY), dict(state.get("trainOpts") or {}),
                   state.get("thresholds"), state.get("temperature"), dict(state.get("provenance") or {}),
                   state.get("unknown"), state.get("modelCard"))
        return spec, encoder_state, dict(state["classifierState"])


# ------------------------------------------------------------------ the seed fork's files
def is_seed_convnext(encoder_opts: dict, encoder_state: dict) -> bool:
    """The seed fork's ConvNeXt: ``{input_channels, pretrained}`` options, keys ``backbone.features.*``."""
    return "backbone" not in encoder_opts and any(k.startswith("backbone.features.") for k in encoder_state)


def seed_convnext_encoder(encoder_opts: dict, encoder_state: dict) -> Tuple[dict, dict]:
    """Our description of the seed's network (ConvNeXt Tiny features, no final norm) and
    its weights (``features.*``; the unused ``backbone.classifier.*`` dropped)."""
    opts = {"backbone": "convnext", "input_channels": int(encoder_opts.get("input_channels", 1)),
            "variant": "tiny", "final_norm": False}
    if "pretrained" in encoder_opts:
        opts["pretrained"] = bool(encoder_opts["pretrained"])
    weights = {k[len("backbone."):]: v for k, v in encoder_state.items() if k.startswith("backbone.features.")}
    return opts, weights


# ------------------------------------------------------------------------- building
def build_model(encoder_opts: dict, classifier_opts: dict, pretrained: bool = False,
                weights_path: Optional[str] = None) -> nn.Sequential:
    encoder = backbones.build_encoder(encoder_opts, pretrained, weights_path)
    return nn.Sequential(OrderedDict(encoder=encoder, classifier=Classifier(classifier_opts)))


def classifier_options(encoder_opts: dict, num_classes: int) -> dict:
    return dict(DefaultClassifierOpts, num_classes=num_classes,
                input_channels=backbones.output_channels(encoder_opts))


def provenance(command_line=None, split_hash: Optional[str] = None) -> dict:
    """What made a model: project version (git commit when available), library versions,
    the command line and a fingerprint of the split."""
    import torchvision

    return {"project": PROJECT, "version": project_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "python": sys.version.split()[0],
            "command": list(sys.argv if command_line is None else command_line), "splitHash": split_hash}


def project_version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+changes" if dirty else "")) if commit else "unknown"


# ------------------------------------------------------------------- saving and loading
@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    jit: bool = False
    path: str = ""

    # convenience views of the spec
    @property
    def data_opts(self) -> dict:
        return self.spec.data_opts

    @property
    def classes(self) -> Dict[str, int]:
        return self.spec.classes

    @property
    def class_map(self) -> ClassMap:
        return self.spec.class_map

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes


def save_model(path: str, model: nn.Module, spec: ModelSpec) -> None:
    atomic_torch_save(spec.to_state(model), path)


def save_jit_model(path: str, model: nn.Module, example: torch.Tensor, spec: ModelSpec,
                   transforms: Optional[dict] = None) -> None:
    """TorchScript trace (on the CPU, eval mode) with JSON extra files."""
    model = model.cpu().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)   # TorchScript is the original's format
        traced = torch.jit.trace(model, example.cpu())
    extra = {"dataOpts": spec.data_opts, "encoderOpts": spec.encoder_opts, "classifierOpts": spec.classifier_opts,
             "classes": spec.classes, "transforms": transforms or {}, **spec.extras()}
    with atomic_write(path, "wb") as handle, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(traced, handle, _extra_files={k: json.dumps(v) for k, v in extra.items()})


JIT_EXTRA_FILES = ("dataOpts", "encoderOpts", "classifierOpts", "classes", "trainOpts", "transforms",
                   "thresholds", "temperature", "provenance", "unknown", "modelCard", "formatVersion")


def parse_extra(raw, name: str, path: str):
    """An extra file's value: JSON (ours) or a Python literal (the original's ``str()``
    of a dict), never evaluated as code. torch hands extra files back as bytes."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else raw
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ModelFileError(f"{path}: extra file {name!r} is neither JSON nor a Python literal "
                                 f"(refused: {text[:60]!r})") from None


def load_jit(path: str, device: torch.device) -> LoadedModel:
    extra = {name: "" for name in JIT_EXTRA_FILES}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            model = torch.jit.load(path, map_location=device, _extra_files=extra)
    except Exception as error:
        raise ModelFileError(f"{path}: not a TorchScript model ({error})") from None
    parsed = {k: parse_extra(v, k, path) for k, v in extra.items()}
    version = parsed["formatVersion"] or 1
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer version of this project (formatVersion {version})")
    if not isinstance(parsed["dataOpts"], dict):
        raise ModelFileError(f"{path}: TorchScript model without a 'dataOpts' dictionary")
    classes = parsed["classes"] if isinstance(parsed["classes"], dict) else dict(DEFAULT_BINARY)
    spec = ModelSpec(parsed["encoderOpts"] or {}, parsed["classifierOpts"] or {"num_classes": len(classes)},
                     parsed["dataOpts"], classes, parsed["trainOpts"] or {}, parsed["thresholds"],
                     parsed["temperature"], parsed["provenance"] or {}, parsed["unknown"], parsed["modelCard"])
    return LoadedModel(model.eval(), spec, jit=True, path=path)


def load_state_file(path: str) -> dict:
    """A model or checkpoint file's dict, loaded safely; one clear error otherwise."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(f"{path}: cannot load it as a model dictionary ({load_failure(error)}); files "
                             "written with --jit_save need --jit_load, and files that hold code are refused") from None


def load_model(path: str, jit: bool = False, device: torch.device = torch.device("cpu")) -> LoadedModel:
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: model file not found")
    if jit:
        return load_jit(path, device)
    spec, encoder_state, classifier_state = ModelSpec.from_state(load_state_file(path), path)
    try:
        model = spec.build()
        model.encoder.load_state_dict(encoder_state)
        model.classifier.load_state_dict(classifier_state)
    except (RuntimeError, ValueError, KeyError) as error:
        raise ModelFileError(f"{path}: weights do not fit the network described in the file ({error})") from None
    return LoadedModel(model.to(device).eval(), spec, path=path)
