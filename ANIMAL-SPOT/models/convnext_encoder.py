"""ConvNeXt encoder on torchvision's ``convnext_*``: ``[B, 1, T, F] -> [B, C, T/32, F/32]``.

With ImageNet weights, the RGB stem convolution becomes a one-channel one whose filters
are the mean of the RGB filters and whose bias is the pretrained bias. torchvision keeps
the network's final LayerNorm in ``classifier[0]``; we keep it (``self.norm``) and apply
it to the feature map, so the head sees features normalised as the pretrained network
expects.
"""

import logging
from typing import Optional

import torch
import torch.nn as nn

log = logging.getLogger("ANIMAL-SPOT")

VARIANTS = {
    # name: (torchvision builder, weights enum name, output channels)
    "tiny": ("convnext_tiny", "ConvNeXt_Tiny_Weights", 768),
    "small": ("convnext_small", "ConvNeXt_Small_Weights", 768),
    "base": ("convnext_base", "ConvNeXt_Base_Weights", 1024),
    "large": ("convnext_large", "ConvNeXt_Large_Weights", 1536),
}


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for but could not be had."""


def imagenet_state_dict(variant: str, weights_path: Optional[str] = None) -> dict:
    """torchvision-format state dict: from ``weights_path``, else torchvision's weights
    API (its cache, or a download where there is a network)."""
    import torchvision.models as tvm

    builder, enum_name, _ = VARIANTS[variant]
    if weights_path:
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise PretrainedWeightsError(f"{weights_path}: cannot load ConvNeXt weights ({error})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or "features.0.0.weight" not in state:
            raise PretrainedWeightsError(
                f"{weights_path}: not a torchvision {builder} state dict (no 'features.0.0.weight')")
        return state
    weights = getattr(tvm, enum_name).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:
        cache = torch.hub.get_dir() + "/checkpoints/" + weights.url.rsplit("/", 1)[-1]
        raise PretrainedWeightsError(
            f"ImageNet weights for {builder} are not available ({error.__class__.__name__}: {error}). "
            f"Either pass --pretrained_weights PATH with a local torchvision state dict "
            f"(torch.save({builder}(weights='IMAGENET1K_V1').state_dict(), PATH) on a machine "
            f"with a network), or put the file {weights.url.rsplit('/', 1)[-1]} into torchvision's "
            f"cache at {cache}."
        ) from None


def one_channel_stem(conv: nn.Conv2d, input_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``input_channels`` inputs: weights averaged over the RGB
    filters (repeated per input channel), bias copied."""
    new = nn.Conv2d(input_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.repeat(1, input_channels, 1, 1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class ConvNextEncoder(nn.Module):
    def __init__(self, input_channels: int = 1, pretrained: bool = False,
                 weights_path: Optional[str] = None, variant: str = "tiny"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown ConvNeXt variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        import torchvision.models as tvm  # imported on use: ResNet runs do not load torchvision

        builder, _, channels = VARIANTS[variant]
        net = getattr(tvm, builder)()
        if pretrained or weights_path:
            net.load_state_dict(imagenet_state_dict(variant, weights_path))
            log.info(f"Loaded ImageNet weights into {builder}"
                     + (f" from {weights_path}" if weights_path else ""))
        stem = net.features[0][0]
        if pretrained or weights_path:
            net.features[0][0] = one_channel_stem(stem, input_channels)
        else:  # torchvision's own initialisation, for one input channel
            net.features[0][0] = nn.Conv2d(input_channels, stem.out_channels, stem.kernel_size, stem.stride)
            nn.init.trunc_normal_(net.features[0][0].weight, std=0.02)
            nn.init.zeros_(net.features[0][0].bias)
        self.features = net.features
        self.norm = net.classifier[0]
        self.out_channels = channels
        self._opts = {"input_channels": input_channels, "variant": variant}

    def forward(self, x):
        return self.norm(self.features(x))
