"""Spectrogram features as the original ANIMAL-SPOT computes them.

Every spectrogram here is laid out ``(channels, time, frequency)``. The chain is:
pre-emphasis -> power STFT (``center=False``, periodic Hann, divided by the window's
energy) -> [augmentation] -> frequency compression (linear / mel / mfcc) -> dB ->
normalisation -> pad/crop. ``FeatureOptions`` is the one description of it, shared by
training, prediction and the model file.
"""

import math
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

FREQ_COMPRESSIONS = ("linear", "mel", "mfcc")
N_MFCC = 32


def pre_emphasis(signal: torch.Tensor, factor: float = 0.98) -> torch.Tensor:
    """``y[0] = x[0]``, ``y[n] = x[n] - factor * x[n-1]`` along the last axis."""
    out = signal.clone()
    out[..., 1:] = signal[..., 1:] - factor * signal[..., :-1]
    return out


# ------------------------------------------------------------------------- spectrogram
@lru_cache(maxsize=8)
def _window(n_fft: int) -> Tuple[torch.Tensor, float]:
    window = torch.hann_window(n_fft)
    return window, float(window.pow(2).sum().sqrt())


def power_spectrogram(signal: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Power STFT ``(1, T, n_fft//2+1)`` of a ``(1, n)`` signal, no centring.

    A signal shorter than one FFT frame is zero-padded to ``n_fft`` (the original fails).
    """
    if signal.shape[-1] < n_fft:
        signal = F.pad(signal, (0, n_fft - signal.shape[-1]))
    window, norm = _window(n_fft)
    spec = torch.stft(
        signal, n_fft, hop_length=hop_length, win_length=n_fft, window=window,
        center=False, normalized=False, onesided=True, return_complex=True,
    )
    spec = spec / norm
    power = spec.real.pow(2) + spec.imag.pow(2)
    return power.transpose(-1, -2).contiguous()


def frame_power(frames: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Power spectrum of already cut frames ``(..., n_fft)`` -> ``(..., n_fft//2+1)``,
    numerically the same as ``power_spectrogram`` on the frames' signal."""
    window, norm = _window(n_fft)
    spec = torch.fft.rfft(frames * window.to(frames.device)) / norm
    return spec.real.pow(2) + spec.imag.pow(2)


# --------------------------------------------------------------------------- resizing
def resize(spec: torch.Tensor, time: int, freq: int) -> torch.Tensor:
    """Nearest-neighbour resize of ``(C, T, F)`` (PyTorch's legacy 'nearest' rule)."""
    if spec.shape[-2:] == (time, freq):
        return spec
    return F.interpolate(spec.unsqueeze(0), size=(time, freq), mode="nearest").squeeze(0)


# ------------------------------------------------------------------ frequency compression
def linear_bin_range(n_freq_in: int, sr: int, fmin: float, fmax: float) -> Tuple[int, int]:
    n = (n_freq_in - 1) * 2
    lo = max(0, math.floor(n * fmin / sr))
    hi = min(n - 1, math.ceil(n * fmax / sr))
    return lo, hi


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_filterbank(n_freq_in: int, sr: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular filters ``(n_mels, n_freq_in)`` with peak 1 (bins use ``n_fft + 1``).

    The mel points are spaced and converted back to Hz in single precision, as the
    original does: in double precision a few filter edges land one bin off."""
    m_lo = 0.0 if fmin == 0 else float(hz_to_mel(fmin))
    mels = torch.linspace(m_lo, float(hz_to_mel(fmax)), n_mels + 2)            # float32
    hz = 700 * (10 ** (mels / 2595) - 1)
    bins = torch.floor((2 * (n_freq_in - 1) + 1) * hz / sr).long().tolist()
    bank = torch.zeros(n_mels, n_freq_in)
    for m in range(1, n_mels + 1):
        left, centre, right = bins[m - 1], bins[m], bins[m + 1]
        if left != centre:
            bank[m - 1, left:centre] = (torch.arange(left, centre) - left).float() / (centre - left)
        if centre != right:
            bank[m - 1, centre:right] = (right - torch.arange(centre, right)).float() / (right - centre)
    return bank


@lru_cache(maxsize=8)
def dct_matrix(n_in: int, keep: int) -> torch.Tensor:
    """Unnormalised DCT-II (scipy.fftpack's default), rows 1..keep: ``(n_in, keep)``."""
    j = np.arange(n_in)
    k = np.arange(1, min(keep + 1, n_in))
    basis = 2.0 * np.cos(np.pi * np.outer(2 * j + 1, k) / (2 * n_in))
    return torch.from_numpy(basis.astype(np.float32))


@dataclass(frozen=True)
class FeatureOptions:
    """What turns a power spectrogram into the network's input (the model's dataOpts,
    plus the normalisation choice that the original does not store)."""

    sr: int = 44100
    preemphases: float = 0.98
    n_fft: int = 4096
    hop_length: int = 441
    n_freq_bins: int = 256
    fmin: float = 500
    fmax: float = 10000
    freq_compression: str = "linear"
    min_level_db: float = -100
    ref_level_db: float = 20
    min_max_norm: bool = False

    def __post_init__(self):
        if self.freq_compression not in FREQ_COMPRESSIONS:
            raise ValueError(
                f"unknown frequency compression {self.freq_compression!r}; "
                f"choose one of {', '.join(FREQ_COMPRESSIONS)}"
            )
        if self.freq_compression in ("mel", "mfcc") and self.fmax > self.sr // 2:
            raise ValueError(f"f_max > sr // 2 ({self.fmax} > {self.sr // 2}) is not possible for mel")

    @classmethod
    def from_data_opts(cls, data_opts: dict, min_max_norm: bool = False) -> "FeatureOptions":
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data_opts.items() if k in names}
        if "num_mels" in data_opts:  # ORCA-SPOT style model files
            values["n_freq_bins"] = data_opts["num_mels"]
        return cls(**values, min_max_norm=min_max_norm)

    def data_opts(self) -> dict:
        """The original's dataOpts dict, keys in its order."""
        opts = asdict(self)
        opts.pop("min_max_norm")
        return opts

    @property
    def input_bins(self) -> int:
        if self.freq_compression == "mfcc":
            return min(N_MFCC, self.n_freq_bins - 1)
        return self.n_freq_bins

    # -- steps -------------------------------------------------------------------------
    def spectrogram(self, signal: torch.Tensor) -> torch.Tensor:
        """Pre-emphasis + power STFT of a ``(1, n)`` signal -> ``(1, T, F_full)``."""
        return power_spectrogram(pre_emphasis(signal, self.preemphases), self.n_fft, self.hop_length)

    def compress(self, spec: torch.Tensor) -> torch.Tensor:
        """Frequency compression of a power spectrogram ``(..., T, F_full)``."""
        if self.freq_compression == "linear":
            lo, hi = linear_bin_range(spec.shape[-1], self.sr, self.fmin, self.fmax)
            band = spec[..., lo:hi]
            shape = band.shape
            flat = band.reshape(-1, 1, shape[-2], shape[-1])
            out = F.interpolate(flat, size=(shape[-2], self.n_freq_bins), mode="nearest")
            return out.reshape(*shape[:-1], self.n_freq_bins)
        bank = mel_filterbank(spec.shape[-1], self.sr, self.n_freq_bins, self.fmin, self.fmax)
        return torch.matmul(spec, bank.t().to(spec.device))

    def to_db(self, spec: torch.Tensor) -> torch.Tensor:
        floor = 10.0 ** (-abs(self.min_level_db) / 10.0)
        return 10.0 * torch.log10(spec.clamp(min=floor))

    def mfcc(self, mel: torch.Tensor) -> torch.Tensor:
        log_mel = 10.0 * torch.log10(mel)
        log_mel = torch.where(torch.isneginf(log_mel), torch.zeros_like(log_mel), log_mel)
        return torch.matmul(log_mel, dct_matrix(mel.shape[-1], N_MFCC).to(mel.device))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """dB normalisation to [0, 1], or min-max over the whole item when chosen.
        For a batch of items ``(B, 1, T, F)`` min-max works item by item."""
        if self.min_max_norm:
            return min_max_normalize(x)
        min_db = -abs(self.min_level_db)
        return ((x - self.ref_level_db - min_db) / -min_db).clamp(0.0, 1.0)

    def level(self, compressed: torch.Tensor) -> torch.Tensor:
        """Compressed power -> dB, or MFCC for ``mfcc`` (the training chain; the original's
        prediction also took the dB of the MFCC, a bug we do not copy)."""
        if self.freq_compression == "mfcc":
            return self.mfcc(compressed)
        return self.to_db(compressed)

    def finish(self, compressed: torch.Tensor) -> torch.Tensor:
        """Compressed power -> network input: dB (or MFCC) then normalisation."""
        return self.normalize(self.level(compressed))

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """Power spectrogram -> network input without augmentation."""
        return self.finish(self.compress(spec))

    def jit_description(self, classes: dict, sequence_len_ms: float) -> dict:
        """The descriptive ``transforms`` entry of a TorchScript model file (the
        original's layout: each value a short text)."""
        norm = ("{min_max : True, min_db : None, ref_db : None}" if self.min_max_norm else
                f"{{min_max : False, min_db : {self.min_level_db}, ref_db : {self.ref_level_db}}}")
        return {
            "load_audio": f"{{sr: {self.sr}, mono : True}}",
            "pre_emph": f"{{pre_empf_factor : {self.preemphases}}}",
            "spectrogram": f"{{fft : {self.n_fft}, hop : {self.hop_length}, center : False}}",
            "freq_compression": f"{{type : {self.freq_compression}, bins : {self.n_freq_bins}, "
                                f"fmin : {self.fmin}, fmax : {self.fmax}}}",
            "amplitude_to_decibel": f"{{min_db : {self.min_level_db}}}",
            "normalize": norm,
            "class_info": f"{{num_class : {len(classes)}, name_class : {classes}}}",
            "seg_size": f"{{size_ms : {sequence_len_ms}}}",
        }


def min_max_normalize(x: torch.Tensor) -> torch.Tensor:
    """Per item: subtract the minimum, divide by the new maximum unless it is 0.
    ``x`` is one item ``(1, T, F)`` or a batch ``(B, 1, T, F)``."""
    flat = x.reshape(x.shape[0], -1) if x.dim() == 4 else x.reshape(1, -1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    peak = flat.max(dim=1, keepdim=True).values
    flat = torch.where(peak == 0, flat, flat / torch.where(peak == 0, torch.ones_like(peak), peak))
    return flat.reshape(x.shape)


# ---------------------------------------------------------------------- fixed length
def pad_or_crop(spec: torch.Tensor, length: int, random_offset: bool,
                rng: Optional[random.Random] = None) -> torch.Tensor:
    """Zero-pad then crop the time axis (dim -2) to ``length`` frames; centred unless
    ``random_offset`` (upper bound exclusive, as the original)."""
    rng = rng or random
    frames = spec.shape[-2]
    if frames < length:
        start = rng.randrange(0, length - frames) if random_offset else (length - frames) // 2
        padded = spec.new_zeros(*spec.shape[:-2], length, spec.shape[-1])
        padded[..., start:start + frames, :] = spec
        spec, frames = padded, length
    if frames > length:
        start = rng.randrange(0, frames - length) if random_offset else (frames - length) // 2
        spec = spec[..., start:start + length, :]
    return spec


def seq_frames(sequence_len_ms: float, sr: int, hop_length: int) -> int:
    """Training segment length in frames: ``int(ms / 1000 * sr / hop)``."""
    return int(float(sequence_len_ms) / 1000 * sr / hop_length)


