"""Reproducibility: every random draw of a run comes from a generator keyed on the run's
seed and where the draw happens (epoch, item, batch, purpose). A run, its loader
workers, the processes of a ``torchrun`` job and a run resumed from a checkpoint all
draw the same numbers, whatever the order in which they ask."""

import hashlib
import random

import torch


def _digest(*parts) -> int:
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The generator of one item's draws in one epoch (the same in any process)."""
    return random.Random(_digest(seed, epoch, index))


def epoch_seed(seed: int, epoch: int, purpose: str = "shuffle") -> int:
    """A 63-bit seed for one epoch's shuffling (or other per-epoch draws)."""
    return _digest(seed, epoch, purpose) >> 1


def batch_generator(seed: int, epoch: int, index: int, purpose: str) -> torch.Generator:
    """A torch generator for one training batch's draws (mixup)."""
    return torch.Generator().manual_seed(_digest(seed, epoch, index, purpose) >> 1)
