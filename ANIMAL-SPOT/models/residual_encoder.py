"""The original ANIMAL-SPOT ResNet encoder: ``[B, 1, T, F] -> [B, 512*expansion, T', F']``."""

import torch.nn as nn

from .residual_base import BasicBlock, Bottleneck, make_stage

DefaultEncoderOpts = {"input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}

RESNET_SIZES = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def block_type(resnet_size: int):
    if resnet_size not in RESNET_SIZES:
        raise ValueError(f"Unsupported resnet size {resnet_size}; choose one of {sorted(RESNET_SIZES)}")
    return RESNET_SIZES[resnet_size][0]


def output_channels(opts: dict) -> int:
    return 512 * block_type(int(opts.get("resnet_size", 18))).expansion


class ResidualEncoder(nn.Module):
    """Stem (conv k x k stride 2, BN, ReLU, optional max-pool) and four residual stages.

    ``max_pool``: 1 = max-pool after the stem; 0 = no max-pool, layer1 strides instead
    (same total reduction, 32x); 2 = neither (16x)."""

    def __init__(self, opts: dict = DefaultEncoderOpts):
        super().__init__()
        opts = {**DefaultEncoderOpts, **opts}
        self._opts = opts
        kernel, max_pool = int(opts["conv_kernel_size"]), int(opts["max_pool"])
        if max_pool not in (0, 1, 2):
            raise ValueError(f"--max_pool must be 0, 1 or 2, not {max_pool}")
        if kernel < 1:
            raise ValueError(f"--conv_kernel_size must be a positive integer, not {kernel}")
        block, sizes = block_type(int(opts["resnet_size"])), RESNET_SIZES[int(opts["resnet_size"])][1]
        self.conv1 = nn.Conv2d(opts["input_channels"], 64, kernel_size=kernel, stride=2,
                               padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU(inplace=True)
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if max_pool == 1 else None
        first_stride = 2 if max_pool == 0 else 1
        channels = 64
        for index, (width, blocks, stride) in enumerate(
                zip((64, 128, 256, 512), sizes, (first_stride, 2, 2, 2)), start=1):
            setattr(self, f"layer{index}", make_stage(block, channels, width, blocks, stride))
            channels = width * block.expansion

    def model_opts(self) -> dict:
        return dict(self._opts)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        if self.max_pool is not None:
            x = self.max_pool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
