"""Backbone registry: one entry per encoder family. ``main.py``, ``predict.py`` and the
model file know a backbone only by its name (``encoderOpts["backbone"]``) and options.

Adding a backbone = one ``register(Backbone(...))`` call below.
"""

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch.nn as nn

from models import convnext_encoder, residual_encoder

log = logging.getLogger("ANIMAL-SPOT")


@dataclass(frozen=True)
class Backbone:
    name: str
    defaults: Dict            # encoderOpts of this backbone (without "backbone")
    build: Callable           # (opts, pretrained: bool, weights_path) -> encoder module
    out_channels: Callable    # opts -> channels of the encoder's feature map
    cli_options: Tuple[str, ...] = ()   # training flags that mean something for it
    pretrained: bool = False  # whether ImageNet weights exist for it
    description: str = ""
    channels_last: bool = False  # faster inference in channels-last memory format (measured in bench/)


REGISTRY: Dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    REGISTRY[backbone.name] = backbone
    return backbone


def get(name: str) -> Backbone:
    if name not in REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def backbone_name(encoder_opts: dict) -> str:
    """Model files of the original carry no name: they are ResNets."""
    return encoder_opts.get("backbone", "resnet")


def build_encoder(encoder_opts: dict, pretrained: bool = False, weights_path: Optional[str] = None) -> nn.Module:
    backbone = get(backbone_name(encoder_opts))
    opts = {**backbone.defaults, **{k: v for k, v in encoder_opts.items() if k != "backbone"}}
    return backbone.build(opts, pretrained, weights_path)


def output_channels(encoder_opts: dict) -> int:
    backbone = get(backbone_name(encoder_opts))
    return backbone.out_channels({**backbone.defaults, **encoder_opts})


register(Backbone(
    name="resnet",
    defaults=dict(residual_encoder.DefaultEncoderOpts),
    build=lambda opts, pretrained, path: residual_encoder.ResidualEncoder(opts),
    out_channels=residual_encoder.output_channels,
    cli_options=("conv_kernel_size", "max_pool", "resnet_size"),
    description="the original ResNet encoder (18/34/50/101/152)",
    channels_last=True,
))

for _variant, (_builder, _, _channels) in convnext_encoder.VARIANTS.items():
    register(Backbone(
        name="convnext" if _variant == "tiny" else f"convnext_{_variant}",
        defaults={"input_channels": 1, "variant": _variant},
        build=lambda opts, pretrained, path: convnext_encoder.ConvNextEncoder(
            opts["input_channels"], pretrained, path, opts["variant"]),
        out_channels=lambda opts, c=_channels: c,
        pretrained=True,
        description=f"torchvision {_builder}, {_channels} output channels",
    ))
