"""Augmentation of the training split, as the original draws it (spec §4.5), on power
spectrograms ``(1, T, F)``.

Every transform takes the random generator at call time: the dataset gives each item a
``random.Random`` keyed on (seed, epoch, item) (``utils.seeding``), so a run, its loader
workers and a run resumed from a checkpoint all draw the same numbers. Integer draws exclude the upper
bound, as the original's (quirk Q-RANDINT, kept: it is the training distribution).
"""

import math
import random
from typing import Callable, Sequence, Tuple

import torch

from .features import resize


class RandomAmplitude:
    """Power scaled by ``10^(d/10)``, d an integer in {-6, ..., +2} dB."""

    def __init__(self, low_db: int = -6, high_db: int = 3):
        self.low, self.high = low_db, high_db

    def __call__(self, spec: torch.Tensor, rng: random.Random = random) -> torch.Tensor:
        return spec * 10.0 ** (rng.randrange(self.low, self.high) / 10.0)


class RandomPitchShift:
    """Scale the frequency axis by ``2^U(log2 0.5, log2 1.5)``; the top is cut (up) or
    filled with the spectrogram's median (down)."""

    def __init__(self, from_factor: float = 0.5, to_factor: float = 1.5):
        self.lo, self.hi = math.log2(from_factor), math.log2(to_factor)

    def __call__(self, spec: torch.Tensor, rng: random.Random = random) -> torch.Tensor:
        factor = 2.0 ** rng.uniform(self.lo, self.hi)
        time, freq = spec.shape[-2:]
        scaled = resize(spec, time, max(1, round(freq * factor)))
        if factor > 1:
            return scaled[..., :freq].contiguous()
        out = torch.full_like(spec, float(spec.median()))
        out[..., : scaled.shape[-1]] = scaled
        return out


class RandomTimeStretch:
    """Scale the time axis by ``2^U(-1, 1)`` (nearest neighbour)."""

    def __init__(self, from_factor: float = 0.5, to_factor: float = 2.0):
        self.lo, self.hi = math.log2(from_factor), math.log2(to_factor)

    def __call__(self, spec: torch.Tensor, rng: random.Random = random) -> torch.Tensor:
        factor = 2.0 ** rng.uniform(self.lo, self.hi)
        time, freq = spec.shape[-2:]
        return resize(spec, max(1, round(time * factor)), freq)


def chain(transforms, spec: torch.Tensor, rng: random.Random = random) -> torch.Tensor:
    for transform in transforms:
        spec = transform(spec, rng)
    return spec


class RandomAddNoise:
    """Mix a random noise file's (augmented, compressed) power spectrogram into the item
    at an SNR drawn from {-3, ..., 11} dB. Returns ``(noisy, clean)``; ``clean`` is the
    item padded to ``min_length`` frames.

    ``noise_spectrogram(path)`` gives the noise file's full power spectrogram and
    ``noise_transform(spec, rng)`` stretches, shifts and compresses it.
    """

    def __init__(self, noise_files: Sequence[str], noise_spectrogram: Callable, noise_transform: Callable,
                 min_length: int, min_snr: int = -3, max_snr: int = 12):
        self.noise_files = list(noise_files)
        self.noise_spectrogram = noise_spectrogram
        self.noise_transform = noise_transform
        self.min_length = min_length
        self.min_snr, self.max_snr = min_snr, max_snr

    def __call__(self, spec: torch.Tensor, rng: random.Random = random) -> Tuple[torch.Tensor, torch.Tensor]:
        noise = self.noise_spectrogram(rng.choice(self.noise_files))
        frames = spec.shape[-2]
        if noise.shape[-2] > 2 * frames:
            start = rng.randrange(0, noise.shape[-2] - 2 * frames)
            noise = noise[..., start:start + 2 * frames, :]
        noise = self.noise_transform(noise, rng)
        if frames < self.min_length:
            padded = torch.zeros(spec.shape[0], self.min_length, spec.shape[-1], dtype=spec.dtype)
            start = rng.randrange(0, self.min_length - frames)
            padded[:, start:start + frames] = spec
            spec = padded
        frames = spec.shape[-2]
        if frames > noise.shape[-2]:
            noise = noise.repeat(1, math.ceil(frames / noise.shape[-2]), 1)
        if frames < noise.shape[-2]:
            start = rng.randrange(0, noise.shape[-2] - frames)
            noise = noise[..., start:start + frames, :]
        snr = rng.randrange(self.min_snr, self.max_snr)
        noise_power = noise.sum()
        if noise_power <= 0:
            return spec, spec
        gain = (spec.sum() / noise_power) * 10.0 ** (-snr / 10.0)
        return spec + gain * noise, spec


# ------------------------------------------------------ this project's augmentation
class SpecAugment:
    """Time and frequency masks on the network input ``(1, T, F)`` (Park et al. 2019):
    ``time_masks`` stretches of up to ``time_width`` frames and ``freq_masks`` bands of
    up to ``freq_width`` bins, each width drawn from ``0 .. max`` and placed at random,
    set to 0 (the normalised floor)."""

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2, freq_width: int = 8):
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width

    def __call__(self, x: torch.Tensor, rng: random.Random = random) -> torch.Tensor:
        x = x.clone()
        for count, width, axis in ((self.time_masks, self.time_width, -2), (self.freq_masks, self.freq_width, -1)):
            size = x.shape[axis]
            for _ in range(count):
                w = min(rng.randint(0, width), size)
                start = rng.randint(0, size - w)
                x.narrow(axis, start, w).zero_()
        return x


class FrontEndMasks:
    """``SpecAugment``'s masks on the image a raw-audio network makes of its input (``--backbone
    birdnet --spec_augment``): a forward hook on its front end (``(B, C, bands, frames)``
    out), active while ``model`` trains (the whole model's mode: a frozen backbone stays in
    eval mode, and its head still trains on masked images). Each item gets its own masks,
    drawn from torch's random state (the trainer seeds it per epoch, as for dropout, so a
    resumed run draws alike); masked cells take ``module.floor()``, the value silence gives
    there."""

    def __init__(self, masks: SpecAugment, model: torch.nn.Module):
        self.masks, self.model = masks, model

    def __call__(self, module: torch.nn.Module, inputs, image: torch.Tensor):
        if not self.model.training:
            return None                                     # eval, export, prediction: the image unchanged
        batch, _, bands, frames = image.shape
        masked = torch.zeros(batch, 1, bands, frames, dtype=torch.bool, device=image.device)
        for item in range(batch):
            for count, width, size, axis in ((self.masks.time_masks, self.masks.time_width, frames, -1),
                                             (self.masks.freq_masks, self.masks.freq_width, bands, -2)):
                for _ in range(count):
                    w = min(int(torch.randint(0, width + 1, ())), size)
                    start = int(torch.randint(0, size - w + 1, ()))
                    masked[item].narrow(axis, start, w).fill_(True)
        return torch.where(masked, module.floor().to(image.dtype), image)


class BackgroundOverlay:
    """Mix a background recording's power spectrogram into the item at an SNR drawn
    uniformly from ``snr_db`` (low, high): a random stretch of the background as long as
    the item (repeated where shorter), scaled so that the item's power over the
    background's is the SNR. ``spectrogram(path)`` gives a file's power spectrogram."""

    def __init__(self, files: Sequence[str], spectrogram: Callable, snr_db: Tuple[float, float] = (0.0, 20.0)):
        self.files, self.spectrogram = list(files), spectrogram
        self.low, self.high = float(snr_db[0]), float(snr_db[1])

    def __call__(self, spec: torch.Tensor, rng: random.Random = random) -> torch.Tensor:
        noise = self.spectrogram(rng.choice(self.files))
        frames = spec.shape[-2]
        if noise.shape[-2] < frames:
            noise = noise.repeat(1, math.ceil(frames / noise.shape[-2]), 1)
        start = rng.randrange(0, noise.shape[-2] - frames + 1)
        noise = noise[..., start:start + frames, :]
        snr = rng.uniform(self.low, self.high)
        noise_power, power = float(noise.sum()), float(spec.sum())
        if noise_power <= 0 or power <= 0:
            return spec
        return spec + noise * (power / noise_power) * 10.0 ** (-snr / 10.0)
