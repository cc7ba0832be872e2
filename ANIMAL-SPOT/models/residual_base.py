"""Residual blocks of the original encoder. Attribute names are fixed by its model files,
and so is their registration order: ``shortcut`` first, then ``conv1 ...``, because an
optimizer's state in a checkpoint is stored by parameter position (spec §5.2)."""

import torch.nn as nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """``shortcut.0`` (1x1 conv) and ``shortcut.1`` (BatchNorm)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, shortcut: nn.Module = None):
        super().__init__()
        self.shortcut = shortcut
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, shortcut: nn.Module = None):
        super().__init__()
        self.shortcut = shortcut
        self.conv1 = nn.Conv2d(in_ch, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, width * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


def make_stage(block, in_ch: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """One stage; only its first block may stride or project."""
    out_ch = width * block.expansion
    shortcut = projection(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None
    layers = [block(in_ch, width, stride, shortcut)]
    layers += [block(out_ch, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
