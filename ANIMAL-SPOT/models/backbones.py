"""Backbone registry: one entry per encoder. ``main.py``, ``predict.py`` and the model
file know a backbone only by its name (``encoderOpts["backbone"]``) and its options.

Adding a backbone is one ``register(Backbone(...))`` call: its builder, its output
channels, and the command-line options it declares (``Option``), which ``main.py``
adds to its parser and copies into ``encoderOpts``. ``timm:<name>`` reaches any timm
model without an entry.
"""

import difflib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from . import convnext_encoder, foundation, residual_encoder, timm_encoder, tv_encoder

log = logging.getLogger("ANIMAL-SPOT")


@dataclass(frozen=True)
class Option:
    """A training flag of a backbone: ``--flag`` on the command line, ``key`` in encoderOpts."""

    flag: str
    key: str
    type: Callable = str
    help: str = ""
    choices: Optional[Tuple] = None
    nargs: Optional[str] = None
    parse: Optional[Callable[[Any], Any]] = None   # command-line value -> encoderOpts value

    @property
    def dest(self) -> str:
        """Its field in the run configuration: the flag's name."""
        return self.flag.lstrip("-")

    def add_to(self, parser) -> None:
        kwargs = dict(type=self.type, default=None, dest=self.dest, help=self.help)
        if self.choices:
            kwargs["choices"] = self.choices
        if self.nargs:
            kwargs["nargs"] = self.nargs
        parser.add_argument(self.flag, **kwargs)

    def value(self, given):
        return self.parse(given) if self.parse else given


@dataclass(frozen=True)
class Backbone:
    name: str
    defaults: Dict                        # encoderOpts of this backbone (without "backbone")
    build: Callable                       # (opts, pretrained: bool, weights_path) -> encoder module
    out_channels: Callable                # opts -> channels of the encoder's feature map
    options: Tuple[Option, ...] = ()      # command-line options it declares
    pretrained: bool = False              # whether ImageNet weights exist for it
    description: str = ""
    audio: bool = False                   # a foundation encoder: raw audio windows in, one vector out

    def parameters(self) -> int:
        """Parameter count, counted on the meta device (nothing is allocated)."""
        encoder = on_meta(lambda: self.build(dict(self.defaults), False, None))
        return sum(p.numel() for p in encoder.parameters())


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device (shapes without memory); on the CPU for builders
    that compute their layout with tensors (torchvision's RegNet)."""
    try:
        with torch.device("meta"):
            return build()
    except NotImplementedError:
        return build()


REGISTRY: Dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    if backbone.name in REGISTRY:
        raise ValueError(f"a backbone called {backbone.name!r} is already registered")
    REGISTRY[backbone.name] = backbone
    return backbone


def get(name: str) -> Backbone:
    if name.startswith(timm_encoder.PREFIX):
        return timm_backbone(name[len(timm_encoder.PREFIX):])
    if foundation.is_foundation(name):
        return foundation_backbone(name)
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=4, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown backbone {name!r}{hint} (python ANIMAL-SPOT/main.py --list_backbones "
                         "lists them; any timm model: timm:<name>)")
    return REGISTRY[name]


def backbone_name(encoder_opts: dict) -> str:
    """Model files of the original carry no name: they are ResNets."""
    return encoder_opts.get("backbone", "resnet")


def encoder_defaults(encoder_opts: dict) -> dict:
    backbone = get(backbone_name(encoder_opts))
    return {**backbone.defaults, **{k: v for k, v in encoder_opts.items() if k != "backbone"}}


def build_encoder(encoder_opts: dict, pretrained: bool = False, weights_path: Optional[str] = None) -> nn.Module:
    backbone = get(backbone_name(encoder_opts))
    return backbone.build(encoder_defaults(encoder_opts), pretrained, weights_path)


def output_channels(encoder_opts: dict) -> int:
    backbone = get(backbone_name(encoder_opts))
    return backbone.out_channels(encoder_defaults(encoder_opts))


def cli_options() -> List[Option]:
    """Every registered option once (backbones may share a flag)."""
    seen: Dict[str, Option] = {}
    for backbone in REGISTRY.values():
        for option in backbone.options:
            if option.flag in seen and seen[option.flag].key != option.key:
                raise ValueError(f"{option.flag} is declared with two keys ({seen[option.flag].key}, {option.key})")
            seen.setdefault(option.flag, option)
    return list(seen.values())


def describe() -> List[str]:
    """One line per backbone for ``--list_backbones``: name, output channels, parameters,
    ImageNet weights, description; a last line for timm models."""
    lines = [f"{'backbone':<20}{'channels':>9}{'parameters':>12}  {'ImageNet':<9}description"]
    for backbone in REGISTRY.values():
        channels = backbone.out_channels(dict(backbone.defaults))
        params = f"{backbone.parameters() / 1e6:.1f}M"
        lines.append(f"{backbone.name:<20}{channels:>9}{params:>12}  {'yes' if backbone.pretrained else 'no':<9}"
                     f"{backbone.description}")
    lines.append(f"{'timm:<name>':<20}{'-':>9}{'-':>12}  {'timm':<9}any timm model with a 2-D feature map "
                 "(timm.list_models() names them)")
    lines.append("foundation encoders for embed.py (embeddings and few-shot heads; not trained by main.py):")
    for name, encoder in foundation.ENCODERS.items():
        info = encoder.info
        lines.append(f"{name:<20}{info.dim:>9}{'-':>12}  {'packaged':<9}{info.version}: {info.window:g} s at "
                     f"{info.sample_rate} Hz, licence {info.licence}")
    lines.append(f"{'onnx:PATH':<20}{'-':>9}{'-':>12}  {'file':<9}any exported embedding model (also "
                 "torchscript:PATH)")
    return lines


# ----------------------------------------------------------------------------- entries
def _first_kernel(values):
    if isinstance(values, list):
        if not values:
            raise ValueError("--conv_kernel_size needs a value")
        if len(values) > 1:
            log.warning(f"--conv_kernel_size: only the first value ({values[0]}) is used")
        return values[0]
    return values


register(Backbone(
    name="resnet",
    defaults=dict(residual_encoder.DefaultEncoderOpts),
    build=lambda opts, pretrained, path: residual_encoder.ResidualEncoder(opts),
    out_channels=residual_encoder.output_channels,
    options=(
        Option("--resnet", "resnet_size", int, "ResNet depth: 18, 34, 50, 101 or 152 (default 18)",
               choices=(18, 34, 50, 101, 152)),
        Option("--conv_kernel_size", "conv_kernel_size", int,
               "kernel size of the first convolution (default 7; only the first value is used)",
               nargs="*", parse=_first_kernel),
        Option("--max_pool", "max_pool", int, "stem pooling: 1 = max-pool after the stem (default), "
               "0 = no max-pool but a strided layer1, 2 = neither (half the down-sampling)", choices=(0, 1, 2)),
    ),
    description="the original ANIMAL-SPOT ResNet encoder (18/34/50/101/152), from scratch",
))

for _variant, (_builder, _channels) in convnext_encoder.VARIANTS.items():
    register(Backbone(
        name="convnext" if _variant == "tiny" else f"convnext_{_variant}",
        defaults={"input_channels": 1, "variant": _variant},
        build=lambda opts, pretrained, path: convnext_encoder.ConvNextEncoder(
            opts["input_channels"], pretrained, path, opts["variant"], opts.get("final_norm", True)),
        out_channels=lambda opts, c=_channels: c,
        pretrained=True,
        description=f"torchvision {_builder} (final LayerNorm kept)",
    ))


@lru_cache(maxsize=None)
def _torchvision_channels(builder: str) -> int:
    encoder = on_meta(lambda: tv_encoder.TorchvisionEncoder(builder)).eval()
    device = next(encoder.parameters()).device
    with torch.no_grad():
        return int(encoder(torch.empty(1, 1, 64, 64, device=device)).shape[1])


TORCHVISION = {
    # name to pass to --backbone: (torchvision builder, description)
    "efficientnet_b0": ("efficientnet_b0", "torchvision EfficientNet-B0: small, fast on a CPU"),
    "efficientnet_b1": ("efficientnet_b1", "torchvision EfficientNet-B1"),
    "efficientnet_b2": ("efficientnet_b2", "torchvision EfficientNet-B2"),
    "efficientnet_b3": ("efficientnet_b3", "torchvision EfficientNet-B3"),
    "efficientnet_b4": ("efficientnet_b4", "torchvision EfficientNet-B4"),
    "efficientnet_v2_s": ("efficientnet_v2_s", "torchvision EfficientNetV2-S"),
    "mobilenet_v3_small": ("mobilenet_v3_small", "torchvision MobileNetV3-Small: the smallest and fastest"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "torchvision MobileNetV3-Large: small, fast on a CPU"),
    "regnet_y_400mf": ("regnet_y_400mf", "torchvision RegNetY-400MF"),
    "regnet_y_800mf": ("regnet_y_800mf", "torchvision RegNetY-800MF"),
    "regnet_y_1_6gf": ("regnet_y_1_6gf", "torchvision RegNetY-1.6GF"),
    "regnet_y_3_2gf": ("regnet_y_3_2gf", "torchvision RegNetY-3.2GF"),
    "tv_resnet18": ("resnet18", "torchvision ResNet-18 (ImageNet weights; not the original's encoder)"),
    "tv_resnet50": ("resnet50", "torchvision ResNet-50 (ImageNet weights; not the original's encoder)"),
}

for _name, (_builder, _description) in TORCHVISION.items():
    register(Backbone(
        name=_name,
        defaults={"input_channels": 1, "builder": _builder},
        build=lambda opts, pretrained, path: tv_encoder.TorchvisionEncoder(
            opts["builder"], opts["input_channels"], pretrained, path),
        out_channels=lambda opts: _torchvision_channels(opts["builder"]),
        pretrained=True,
        description=_description,
    ))


@lru_cache(maxsize=None)
def timm_backbone(model: str) -> Backbone:
    """The entry of ``timm:<model>`` (made on first use; an unknown name is an error
    with the closest names)."""
    channels = timm_encoder.feature_channels(model)
    return Backbone(
        name=timm_encoder.PREFIX + model,
        defaults={"input_channels": 1},
        build=lambda opts, pretrained, path: timm_encoder.TimmEncoder(model, opts["input_channels"], pretrained, path),
        out_channels=lambda opts: channels,
        pretrained=True,
        description=f"timm {model}",
    )


@lru_cache(maxsize=None)
def foundation_backbone(name: str) -> Backbone:
    """The entry of a foundation encoder (``models.foundation``): its options are the
    ``encoderOpts`` a store or a head's model file keeps (rate, window, dimension, weights)."""
    return Backbone(name=name, defaults={},
                    build=lambda opts, pretrained, path: foundation.build({**opts, "backbone": name}, pretrained),
                    out_channels=lambda opts: int(opts["dim"]), description=f"foundation encoder {name}", audio=True,
                    pretrained=name in foundation.TRAINABLE)
