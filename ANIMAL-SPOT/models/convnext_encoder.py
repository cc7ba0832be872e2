"""ConvNeXt encoder on torchvision's ``convnext_*``: ``[B, 1, T, F] -> [B, C, T/32, F/32]``.

With ImageNet weights, the RGB stem convolution becomes a one-channel one whose filters
are the mean of the RGB filters and whose bias is the pretrained bias. torchvision keeps
the network's final LayerNorm in ``classifier[0]``; we keep it (``self.norm``) and apply
it to the feature map, so the head sees features normalised as the pretrained network
expects. ``final_norm=False`` is the seed fork's network (features only); its model files
and checkpoints load into that form.
"""

from typing import Optional

import torch.nn as nn

from .tv_encoder import PretrainedWeightsError, load_imagenet, one_channel_stem  # noqa: F401  (its public place)
from .tv_encoder import imagenet_state_dict as tv_imagenet_state_dict

VARIANTS = {
    # name: (torchvision builder, output channels)
    "tiny": ("convnext_tiny", 768),
    "small": ("convnext_small", 768),
    "base": ("convnext_base", 1024),
    "large": ("convnext_large", 1536),
}


def imagenet_state_dict(variant: str, weights_path: Optional[str] = None) -> dict:
    return tv_imagenet_state_dict(VARIANTS[variant][0], weights_path, "features.0.0.weight")


class ConvNextEncoder(nn.Module):
    def __init__(self, input_channels: int = 1, pretrained: bool = False,
                 weights_path: Optional[str] = None, variant: str = "tiny", final_norm: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown ConvNeXt variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        import torchvision.models as tvm  # imported on use: ResNet runs do not load torchvision

        builder, channels = VARIANTS[variant]
        net = getattr(tvm, builder)()
        if pretrained or weights_path:
            load_imagenet(net, builder, weights_path, "features.0.0.weight")
            net.features[0][0] = one_channel_stem(net.features[0][0], input_channels)
        else:  # torchvision's own initialisation, for one input channel
            stem = net.features[0][0]
            net.features[0][0] = nn.Conv2d(input_channels, stem.out_channels, stem.kernel_size, stem.stride)
            nn.init.trunc_normal_(net.features[0][0].weight, std=0.02)
            nn.init.zeros_(net.features[0][0].bias)
        self.features = net.features
        self.norm = net.classifier[0] if final_norm else None
        self.out_channels = channels
        self._opts = {"input_channels": input_channels, "variant": variant, "final_norm": final_norm}

    def forward(self, x):
        x = self.features(x)
        return self.norm(x) if self.norm is not None else x
