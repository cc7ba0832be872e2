"""The original's transform objects (spec §14), as thin callables over ``data.features``.

Scripts written around ANIMAL-SPOT build their own chains from these names, e.g.
``Compose(PreEmphasize(0.98), Spectrogram(1024, 172, center=False), Interpolate(256, 44100, 500, 10000),
Amp2Db(-100), Normalize(-100, 20))`` on ``load_audio(path, 44100)``. Signals are
``(channels, samples)``, spectrograms ``(channels, time, frequency)``. The project's own
pipeline uses ``FeatureOptions`` directly; both compute the same numbers.
"""

import random
from typing import Optional

import torch
import torch.nn.functional as F

from .audio_io import AudioFileError, read_audio, resample, to_mono  # noqa: F401  (public names)
from .features import (N_MFCC, _window, dct_matrix, linear_bin_range, mel_filterbank,
                           min_max_normalize, pad_or_crop)


def load_audio(file_name: str, sr: Optional[int] = None, mono: bool = True) -> torch.Tensor:
    """``(1, n)`` float32 (``(channels, n)`` with ``mono=False``), resampled to ``sr`` when given."""
    data, rate = read_audio(file_name)
    if mono:
        signal = to_mono(data).unsqueeze(0)
    else:
        signal = torch.from_numpy(data.T.copy())
    return signal if sr is None else resample(signal, rate, sr)


class PreEmphasize:
    """``y[0] = x[0]``, ``y[n] = x[n] - factor x[n-1]`` along time of a 2-D ``(channels, n)`` signal."""

    def __init__(self, factor: float = 0.97):
        self.factor = factor

    def __call__(self, signal: torch.Tensor) -> torch.Tensor:
        if signal.dim() != 2:
            raise ValueError(f"PreEmphasize expects a 2-D (channels, samples) signal, got {tuple(signal.shape)}")
        out = signal.clone()
        out[:, 1:] = signal[:, 1:] - self.factor * signal[:, :-1]
        return out


class Spectrogram:
    """Power STFT ``(channels, T, n_fft//2+1)``: periodic Hann window, divided by the
    window's energy; ``center`` pads by reflection as torch.stft does."""

    def __init__(self, n_fft: int, hop_length: int, center: bool = True):
        self.n_fft, self.hop_length, self.center = n_fft, hop_length, center

    def __call__(self, signal: torch.Tensor) -> torch.Tensor:
        if not self.center and signal.shape[-1] < self.n_fft:
            signal = F.pad(signal, (0, self.n_fft - signal.shape[-1]))
        window, norm = _window(self.n_fft)
        spec = torch.stft(signal, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                          window=window, center=self.center, pad_mode="reflect", onesided=True,
                          return_complex=True) / norm
        return (spec.real.pow(2) + spec.imag.pow(2)).transpose(-1, -2).contiguous()


class Interpolate:
    """Linear frequency compression: keep the bins of ``[f_min, f_max]``, resize to
    ``n_freqs`` by nearest neighbour."""

    def __init__(self, n_freqs: int, sr: Optional[int] = None, f_min: float = 0, f_max: Optional[float] = None):
        self.n_freqs, self.sr, self.f_min, self.f_max = n_freqs, sr, f_min, f_max

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        if self.sr is None:                      # without a rate: the whole axis
            band = spec
        else:
            f_max = self.f_max if self.f_max is not None else self.sr / 2
            lo, hi = linear_bin_range(spec.shape[-1], self.sr, self.f_min, f_max)
            band = spec[..., lo:hi]
        flat = band.reshape(-1, 1, *band.shape[-2:])
        out = F.interpolate(flat, size=(band.shape[-2], self.n_freqs), mode="nearest")
        return out.reshape(*band.shape[:-1], self.n_freqs)


class F2M:
    """Mel compression: triangular filters (peak 1) applied to the power spectrogram."""

    def __init__(self, sr: int = 16000, n_mels: int = 40, f_min: float = 0, f_max: Optional[float] = None):
        f_max = f_max if f_max is not None else sr // 2
        if f_max > sr // 2:
            raise ValueError(f"f_max > sr // 2 ({f_max} > {sr // 2})")
        self.sr, self.n_mels, self.f_min, self.f_max = sr, n_mels, f_min, f_max

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        bank = mel_filterbank(spec.shape[-1], self.sr, self.n_mels, self.f_min, self.f_max)
        return torch.matmul(spec, bank.t().to(spec.device))


class M2MFCC:
    """Mel power -> MFCC: ``10 log10`` (-inf -> 0), unnormalised DCT-II, coefficients 1..n_mfcc."""

    def __init__(self, n_mfcc: int = N_MFCC):
        self.n_mfcc = n_mfcc

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        log_mel = 10.0 * torch.log10(mel)
        log_mel = torch.where(torch.isneginf(log_mel), torch.zeros_like(log_mel), log_mel)
        return torch.matmul(log_mel, dct_matrix(mel.shape[-1], self.n_mfcc).to(mel.device))


class Amp2Db:
    """``10 log10(max(P, 10^(min_level_db / 10)))`` (``20 log10`` for ``stype="magnitude"``);
    without ``min_level_db`` no floor."""

    def __init__(self, min_level_db: Optional[float] = None, stype: str = "power"):
        if stype not in ("power", "magnitude"):
            raise ValueError(f"stype must be 'power' or 'magnitude', not {stype!r}")
        self.floor = None if min_level_db is None else 10.0 ** (-abs(min_level_db) / (10.0 if stype == "power" else 20.0))
        self.factor = 10.0 if stype == "power" else 20.0

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        if self.floor is not None:
            spec = spec.clamp(min=self.floor)
        return self.factor * torch.log10(spec)


class Normalize:
    """dB -> [0, 1]: ``clamp((dB - ref_level_db - min_level_db) / -min_level_db, 0, 1)``."""

    def __init__(self, min_level_db: float = -100, ref_level_db: float = 20):
        self.min_level_db, self.ref_level_db = -abs(min_level_db), ref_level_db

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        return ((spec - self.ref_level_db - self.min_level_db) / -self.min_level_db).clamp(0.0, 1.0)


class MinMaxNormalize:
    """Subtract the minimum, divide by the new maximum unless it is 0 (whole item)."""

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        return min_max_normalize(spec)


class PaddedSubsequenceSampler:
    """Zero-pad then crop axis ``dim`` to ``sequence_length``: random offsets (upper
    bound exclusive) or centred."""

    def __init__(self, sequence_length: int, dim: int = 0, random: bool = True):
        self.sequence_length, self.dim, self.random = sequence_length, dim, random

    def __call__(self, spec: torch.Tensor, rng: Optional[random.Random] = None) -> torch.Tensor:
        if spec.dim() == 1:
            return pad_or_crop(spec.unsqueeze(-1), self.sequence_length, self.random, rng)[..., 0]
        moved = spec.movedim(self.dim, -2)
        return pad_or_crop(moved, self.sequence_length, self.random, rng).movedim(-2, self.dim)


class Compose:
    """Apply transforms in order."""

    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x
