"""Audio -> network input, as the original ANIMAL-SPOT computes it.

Every spectrogram here is laid out ``(channels, time, frequency)``. The chain is:
load (soundfile, mono, torchaudio resampling) -> pre-emphasis -> power STFT
(``center=False``, periodic Hann, divided by the window's energy) -> [augmentation] ->
frequency compression (linear / mel / mfcc) -> dB -> normalisation -> pad/crop.
"""

import logging
import math
import os
import random
from dataclasses import dataclass, asdict
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

log = logging.getLogger("ANIMAL-SPOT")

FREQ_COMPRESSIONS = ("linear", "mel", "mfcc")
N_MFCC = 32

# torchaudio's documented equivalent of resampy's "kaiser_best" filter (the original's).
KAISER_BEST = dict(
    lowpass_filter_width=64,
    rolloff=0.9475937167399596,
    resampling_method="sinc_interp_kaiser",
    beta=14.769656459379492,
)


class AudioFileError(RuntimeError):
    """An audio file could not be used; the message names the file."""


# ----------------------------------------------------------------------------- loading
def read_audio(path: str) -> Tuple[np.ndarray, int]:
    """Decode a sound file to float32 ``(samples, channels)``; one clear error if it fails."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types
        raise AudioFileError(f"{path}: cannot read audio ({error})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no samples")
    return data, rate


def resample(signal: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (kaiser_best-like filter)."""
    if orig_sr == new_sr:
        return signal
    import torchaudio.functional as AF  # only when needed: keeps prediction's memory small

    return AF.resample(signal, orig_sr, new_sr, **KAISER_BEST)


def to_mono(data: np.ndarray) -> torch.Tensor:
    """float32 ``(samples, channels)`` -> ``(samples,)``, the mean over channels."""
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono))


def load_audio(path: str, sr: int) -> torch.Tensor:
    """Mono float32 ``(1, n)`` at ``sr``: channels averaged, resampled when needed."""
    data, rate = read_audio(path)
    return resample(to_mono(data).unsqueeze(0), rate, sr)


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
    def n_freq_full(self) -> int:
        return self.n_fft // 2 + 1

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


def min_max_normalize(x: torch.Tensor) -> torch.Tensor:
    """Per item: subtract the minimum, divide by the new maximum unless it is 0.
    ``x`` is one item ``(1, T, F)`` or a batch ``(B, 1, T, F)``."""
    flat = x.reshape(x.shape[0], -1) if x.dim() == 4 else x.reshape(1, -1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    peak = flat.max(dim=1, keepdim=True).values
    flat = torch.where(peak == 0, flat, flat / torch.where(peak == 0, torch.ones_like(peak), peak))
    return flat.reshape(x.shape)


# ------------------------------------------------------------------------ augmentation
class RandomAmplitude:
    """Power scaled by ``10^(d/10)``, d an integer in {-6, ..., +2} dB (original range)."""

    def __init__(self, low_db: int = -6, high_db: int = 3, rng: Optional[random.Random] = None):
        self.low, self.high, self.rng = low_db, high_db, rng or random

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        db = self.rng.randrange(self.low, self.high)
        return spec * 10.0 ** (db / 10.0)


class RandomPitchShift:
    """Scale the frequency axis by ``2^U(log2 0.5, log2 1.5)``; the top is cut (up) or
    filled with the spectrogram's median (down)."""

    def __init__(self, from_factor: float = 0.5, to_factor: float = 1.5, rng: Optional[random.Random] = None):
        self.lo, self.hi, self.rng = math.log2(from_factor), math.log2(to_factor), rng or random

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        factor = 2.0 ** self.rng.uniform(self.lo, self.hi)
        time, freq = spec.shape[-2:]
        scaled = resize(spec, time, max(1, round(freq * factor)))
        if factor > 1:
            return scaled[..., :freq].contiguous()
        out = torch.full_like(spec, float(spec.median()))
        out[..., : scaled.shape[-1]] = scaled
        return out


class RandomTimeStretch:
    """Scale the time axis by ``2^U(-1, 1)`` (nearest neighbour)."""

    def __init__(self, from_factor: float = 0.5, to_factor: float = 2.0, rng: Optional[random.Random] = None):
        self.lo, self.hi, self.rng = math.log2(from_factor), math.log2(to_factor), rng or random

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        factor = 2.0 ** self.rng.uniform(self.lo, self.hi)
        time, freq = spec.shape[-2:]
        return resize(spec, max(1, round(time * factor)), freq)


class RandomAddNoise:
    """Mix a random noise file's (augmented, compressed) power spectrogram into the item
    at an SNR drawn from {-3, ..., 11} dB. Returns ``(noisy, clean)``; ``clean`` is the
    item padded to ``min_length`` frames.

    ``noise_spectrogram(path)`` gives the noise file's full power spectrogram and
    ``noise_transform`` stretches, shifts and compresses it.
    """

    def __init__(self, noise_files: Sequence[str], noise_spectrogram, noise_transform,
                 min_length: int, min_snr: int = -3, max_snr: int = 12,
                 rng: Optional[random.Random] = None):
        self.noise_files = list(noise_files)
        self.noise_spectrogram = noise_spectrogram
        self.noise_transform = noise_transform
        self.min_length = min_length
        self.min_snr, self.max_snr = min_snr, max_snr
        self.rng = rng or random

    def __call__(self, spec: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        noise = self.noise_spectrogram(self.rng.choice(self.noise_files))
        frames = spec.shape[-2]
        if noise.shape[-2] > 2 * frames:
            start = self.rng.randrange(0, noise.shape[-2] - 2 * frames)
            noise = noise[..., start:start + 2 * frames, :]
        noise = self.noise_transform(noise)
        if frames < self.min_length:
            padded = torch.zeros(spec.shape[0], self.min_length, spec.shape[-1], dtype=spec.dtype)
            start = self.rng.randrange(0, self.min_length - frames)
            padded[:, start:start + frames] = spec
            spec = padded
        frames = spec.shape[-2]
        if frames > noise.shape[-2]:
            noise = noise.repeat(1, math.ceil(frames / noise.shape[-2]), 1)
        if frames < noise.shape[-2]:
            start = self.rng.randrange(0, noise.shape[-2] - frames)
            noise = noise[..., start:start + frames, :]
        snr = self.rng.randrange(self.min_snr, self.max_snr)
        noise_power = noise.sum()
        if noise_power <= 0:
            return spec, spec
        gain = (spec.sum() / noise_power) * 10.0 ** (-snr / 10.0)
        return spec + gain * noise, spec


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


# ---------------------------------------------------------------------------- cache
def cache_file_name(cache_dir: str, audio_path: str) -> str:
    """The original's flattened name: folder with '/' (and '\\') -> '_', then '_<stem>.spec'."""
    folder, base = os.path.split(audio_path)
    flat = folder.replace("/", "_").replace("\\", "_").replace(":", "_")
    return os.path.join(cache_dir, flat + "_" + os.path.splitext(base)[0] + ".spec")


class CachedSpectrogram:
    """Power spectrogram of a whole file (load, resample, pre-emphasis, STFT), cached on
    disk when ``cache_dir`` is set. Entries record every option that shaped them and the
    source path, size and modification time, so a stale or colliding entry is recomputed.
    Writes go to a temporary name then are renamed: safe with several loader workers."""

    VERSION = 5

    def __init__(self, options: FeatureOptions, cache_dir: Optional[str] = None):
        self.options = options
        self.cache_dir = cache_dir
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def _key(self, path: str) -> dict:
        stat = os.stat(path)
        o = self.options
        return {"v": self.VERSION, "source": os.path.abspath(path), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "sr": o.sr, "preemphases": o.preemphases,
                "n_fft": o.n_fft, "hop_length": o.hop_length}

    def compute(self, path: str) -> torch.Tensor:
        return self.options.spectrogram(load_audio(path, self.options.sr))

    def __call__(self, path: str) -> torch.Tensor:
        if not self.cache_dir:
            return self.compute(path)
        try:
            key = self._key(path)
        except OSError as error:
            raise AudioFileError(f"{path}: {error}") from None
        cache_path = cache_file_name(self.cache_dir, path)
        cached = self._read(cache_path)
        if cached is not None and all(cached.get(k) == v for k, v in key.items()):
            return cached["data"]
        spec = self.compute(path)
        tmp = f"{cache_path}.{os.getpid()}.tmp"
        torch.save(dict(key, data=spec), tmp)
        os.replace(tmp, cache_path)
        return spec

    @staticmethod
    def _read(cache_path: str) -> Optional[dict]:
        if not os.path.isfile(cache_path):
            return None
        try:
            entry = torch.load(cache_path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if not isinstance(entry, dict) or not torch.is_tensor(entry.get("data")) or entry["data"].dim() != 3:
            return None
        return entry
