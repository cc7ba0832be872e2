"""Any timm model as an encoder (``--backbone timm:<name>``): its last feature map
``forward_features(x) -> [B, C, H', W']``, one input channel.

ImageNet weights come from timm's cache (the Hugging Face hub cache; a download where
there is a network) or from a local timm checkpoint (``--pretrained_weights``). The
one-channel stem takes the mean of the RGB filters, as for the torchvision backbones
(timm's own ``in_chans=1`` adaptation sums them).
"""

import difflib
import logging
from typing import Optional

import torch
import torch.nn as nn

from .tv_encoder import PretrainedWeightsError

log = logging.getLogger("ANIMAL-SPOT")
PREFIX = "timm:"


class TimmModelError(ValueError):
    """A timm model that does not exist or gives no feature map."""


def check_name(name: str) -> None:
    import timm

    if name in timm.list_models():
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    raise TimmModelError(f"unknown timm model {name!r}" + (f"; closest: {', '.join(close)}" if close else ""))


def create(name: str, input_channels: int) -> nn.Module:
    import timm

    check_name(name)
    return timm.create_model(name, pretrained=False, in_chans=input_channels, num_classes=0, global_pool="")


def stem_key(net: nn.Module) -> Optional[str]:
    first = (getattr(net, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0]
    return f"{first}.weight" if first else None


def pretrained_state(name: str, weights_path: Optional[str]) -> dict:
    """The model's 3-channel state dict from a local file or timm's cache / hub."""
    if weights_path:
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise PretrainedWeightsError(f"{weights_path}: cannot load timm weights for {name} ({error})") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise PretrainedWeightsError(f"{weights_path}: not a state dict")
        return state
    import timm

    try:
        return timm.create_model(name, pretrained=True, num_classes=0).state_dict()
    except Exception as error:
        raise PretrainedWeightsError(
            f"ImageNet weights for timm model {name} are not available ({error.__class__.__name__}: {error}). "
            f"Either pass --pretrained_weights PATH with a local timm checkpoint "
            f"(torch.save(timm.create_model('{name}', pretrained=True).state_dict(), PATH) on a machine with "
            f"a network), or fill timm's Hugging Face cache (HF_HOME) on such a machine first."
        ) from None


class TimmEncoder(nn.Module):
    def __init__(self, name: str, input_channels: int = 1, pretrained: bool = False,
                 weights_path: Optional[str] = None):
        super().__init__()
        self.net = create(name, input_channels)
        if pretrained or weights_path:
            state = pretrained_state(name, weights_path)
            key = stem_key(self.net)
            if key in state and state[key].dim() == 4 and state[key].shape[1] != input_channels:
                state[key] = state[key].mean(dim=1, keepdim=True).repeat(1, input_channels, 1, 1)
            own = self.net.state_dict()
            usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            missing = [k for k in own if k not in usable]
            if missing:
                raise PretrainedWeightsError(
                    f"{weights_path or 'timm weights'}: {len(missing)} tensor(s) of {name} missing or of "
                    f"another shape, e.g. {', '.join(missing[:3])}")
            self.net.load_state_dict(usable)
            log.info(f"Loaded ImageNet weights into timm:{name}" + (f" from {weights_path}" if weights_path else ""))
        self.out_channels, self.channels_last_output = feature_layout(name, input_channels)
        self._opts = {"input_channels": input_channels, "name": name}

    def forward(self, x):
        features = self.net.forward_features(x)
        return features.permute(0, 3, 1, 2) if self.channels_last_output else features


def feature_layout(name: str, input_channels: int = 1):
    """``(channels, channels_last)`` of the model's last feature map, checked on the meta
    device (no weights are allocated); an error names a model whose features are not a
    2-D map (``[B, C, H, W]``, or ``[B, H, W, C]`` as some timm models give it)."""
    with torch.device("meta"):
        net = create(name, input_channels)
        try:
            out = net.forward_features(torch.empty(1, input_channels, 128, 256))
        except Exception as error:
            raise TimmModelError(f"timm model {name}: cannot take its feature map ({error})") from None
    if not torch.is_tensor(out) or out.dim() != 4:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise TimmModelError(f"timm model {name}: its features are not a [B, C, H, W] map ({shape}); "
                             "choose a convolutional model")
    channels = getattr(net, "num_features", out.shape[1])
    if out.shape[1] != channels and out.shape[-1] == channels:
        return int(channels), True
    return int(out.shape[1]), False


def feature_channels(name: str, input_channels: int = 1) -> int:
    return feature_layout(name, input_channels)[0]
