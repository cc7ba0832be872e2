"""Encoders on torchvision's image networks: ``[B, 1, T, F] -> [B, C, T', F']``.

Shared rules for every torchvision family (ConvNeXt, EfficientNet, MobileNet V3,
RegNet Y, ResNet): the first convolution takes one input channel; with ImageNet weights
its filters are the mean of the RGB filters (bias copied), otherwise it is initialised
as torchvision initialises its convolutions. ImageNet weights come from torchvision's
weights API (its cache, or a download where there is a network) or from a local state
dict (``--pretrained_weights``); without either, one error names both remedies.
"""

import logging
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

log = logging.getLogger("ANIMAL-SPOT")


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for but could not be had."""


def weights_enum(builder: str):
    import torchvision.models as tvm

    return tvm.get_model_weights(builder).DEFAULT


def imagenet_state_dict(builder: str, weights_path: Optional[str] = None,
                        required_key: Optional[str] = None) -> dict:
    """A torchvision state dict for ``builder``: from ``weights_path``, else from
    torchvision's weights API (its cache, or a download where there is a network)."""
    if weights_path:
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise PretrainedWeightsError(f"{weights_path}: cannot load {builder} weights ({error})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or (required_key and required_key not in state):
            raise PretrainedWeightsError(
                f"{weights_path}: not a torchvision {builder} state dict (no {required_key!r})")
        return state
    weights = weights_enum(builder)
    file_name = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:
        cache = torch.hub.get_dir() + "/checkpoints/" + file_name
        raise PretrainedWeightsError(
            f"ImageNet weights for {builder} are not available ({error.__class__.__name__}: {error}). "
            f"Either pass --pretrained_weights PATH with a local torchvision state dict "
            f"(torch.save(torchvision.models.{builder}(weights='DEFAULT').state_dict(), PATH) on a machine "
            f"with a network), or put the file {file_name} into torchvision's cache at {cache}."
        ) from None


def one_channel_stem(conv: nn.Conv2d, input_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``input_channels`` inputs: weights averaged over the RGB
    filters (repeated per input channel), bias copied."""
    new = nn.Conv2d(input_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).repeat(1, input_channels, 1, 1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def fresh_stem(conv: nn.Conv2d, input_channels: int, init: Callable[[nn.Conv2d], None]) -> nn.Conv2d:
    new = nn.Conv2d(input_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None)
    init(new)
    return new


def kaiming_init(conv: nn.Conv2d) -> None:
    """torchvision's initialisation of the convolutions of EfficientNet, MobileNet, RegNet, ResNet."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def first_conv(net: nn.Module) -> Tuple[str, nn.Conv2d]:
    """Name and module of the first 3-channel (RGB) convolution."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    raise ValueError(f"{net.__class__.__name__}: no 3-channel input convolution found")


def adapt_stem(net: nn.Module, input_channels: int, pretrained: bool,
               init: Callable[[nn.Conv2d], None] = kaiming_init) -> None:
    """Replace the RGB stem by a one-channel one (mean of the RGB filters when pretrained)."""
    name, conv = first_conv(net)
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, one_channel_stem(conv, input_channels) if pretrained
            else fresh_stem(conv, input_channels, init))


def load_imagenet(net: nn.Module, builder: str, weights_path: Optional[str], required_key: str) -> None:
    net.load_state_dict(imagenet_state_dict(builder, weights_path, required_key))
    log.info(f"Loaded ImageNet weights into {builder}" + (f" from {weights_path}" if weights_path else ""))


FEATURES = {
    # family prefix: network -> feature extractor (everything before pooling and the head)
    "efficientnet": lambda net: net.features,
    "mobilenet_v3": lambda net: net.features,
    "regnet": lambda net: nn.Sequential(net.stem, net.trunk_output),
    "resnet": lambda net: nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                        net.layer1, net.layer2, net.layer3, net.layer4),
}


def family_of(builder: str) -> str:
    for family in FEATURES:
        if builder.startswith(family):
            return family
    raise ValueError(f"no feature extractor known for torchvision's {builder}")


class TorchvisionEncoder(nn.Module):
    """The feature extractor of torchvision's ``builder`` network (EfficientNet,
    MobileNet V3, RegNet Y, ResNet), one input channel."""

    def __init__(self, builder: str, input_channels: int = 1, pretrained: bool = False,
                 weights_path: Optional[str] = None):
        super().__init__()
        import torchvision.models as tvm

        net = tvm.get_model(builder)
        if pretrained or weights_path:
            load_imagenet(net, builder, weights_path, first_conv(net)[0] + ".weight")
        adapt_stem(net, input_channels, bool(pretrained or weights_path))
        self.features = FEATURES[family_of(builder)](net)
        self._opts = {"input_channels": input_channels, "builder": builder}

    def forward(self, x):
        return self.features(x)

