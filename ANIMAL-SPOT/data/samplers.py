"""Which training items an epoch visits, in which order, in which process.

Every sampler draws from a generator keyed on (seed, epoch), so an epoch's order is the
same in a resumed run and in every process of a ``torchrun`` job (each then takes its
own share). Validation and test are split between processes without padding or
duplicates, so every sample counts once.
"""

from typing import Iterator, List, Optional, Sequence

import torch
import torch.utils.data

from ..utils.seeding import epoch_seed


class ShuffleSampler(torch.utils.data.Sampler):
    """A fresh permutation every epoch; with several processes each takes every
    ``world``-th item of it (the permutation trimmed to a multiple of ``world``)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "shuffle"))
        order = torch.randperm(self.n, generator=generator).tolist()
        usable = len(order) - len(order) % self.world
        return iter(order[self.rank:usable:self.world])

    def __len__(self) -> int:
        return self.n // self.world


class BalancedSampler(torch.utils.data.Sampler):
    """Draws ``len(labels)`` items per epoch (with replacement) with probability
    proportional to their class's weight: classes are seen as often as the weights say,
    the epoch keeps its length. Reads only the labels (from the file names)."""

    def __init__(self, labels: Sequence[int], class_weights: Sequence[float], seed: int,
                 rank: int = 0, world: int = 1):
        weights = torch.tensor([class_weights[c] for c in labels], dtype=torch.float64)
        self.weights, self.seed, self.rank, self.world = weights, seed, rank, world
        self.n = len(labels)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "balanced"))
        draws = torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist()
        usable = len(draws) - len(draws) % self.world
        return iter(draws[self.rank:usable:self.world])

    def __len__(self) -> int:
        return self.n // self.world


class ShardSampler(torch.utils.data.Sampler):
    """Items ``rank, rank + world, ...`` in order: every item in exactly one process."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices: List[int] = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def class_counts(labels: Sequence[int], num_classes: int) -> List[int]:
    counts = [0] * num_classes
    for label in labels:
        counts[label] += 1
    return counts


def sampling_weights(base: Sequence[float], names: Sequence[str], boosts: Optional[dict] = None) -> List[float]:
    boosts = boosts or {}
    return [w * boosts.get(name, 1.0) for w, name in zip(base, names)]
