"""Reading audio: decode, mono, resample to the model's rate; whole files or blocks of
long recordings; a fast header scan that finds unusable files before training starts.

Samples are float32 as soundfile decodes them (integer PCM scaled to [-1, 1)); several
channels are averaged; other rates are resampled with resampy's ``kaiser_best`` design
(the original's resampler) to ``int(n * new / orig)`` samples.
"""

import math
from functools import lru_cache
from typing import Iterable, List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from .remote import RemoteError, open_recording
from ..utils.paths import files_below

# resampy's "kaiser_best" filter as resampy (0.2 and later) ships it: a Kaiser-windowed
# sinc with 50 zero crossings on each side, cut-off at 0.9173 of the lower Nyquist
# frequency, beta 12.98, tabulated at 8192 points per zero crossing. resampy stores the
# table; beta is the value that reproduces it (to 2e-15).
KAISER_BEST = dict(zero_crossings=50, rolloff=0.9173473712608761, beta=12.984585247040012, precision=8192)
TRAINING_EXTENSIONS = (".wav",)             # compared without regard to case
RECORDING_EXTENSIONS = (".wav", ".flac")


class AudioFileError(RuntimeError):
    """An audio file could not be used; the message names the file."""


def has_extension(name: str, extensions: Iterable[str]) -> bool:
    return name.lower().endswith(tuple(extensions))


# ----------------------------------------------------------------------------- decoding
def read_audio(path: str) -> Tuple[np.ndarray, int]:
    """Decode a sound file to float32 ``(samples, channels)``; one clear error if it fails,
    holds no samples or holds NaN / infinite values."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types
        raise AudioFileError(f"{path}: cannot read audio ({error})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no samples")
    check_finite(data, path)
    return data, rate


def check_finite(data: np.ndarray, path: str) -> None:
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: the file holds NaN or infinite sample values")


def to_mono(data: np.ndarray, channel: Optional[int] = None) -> torch.Tensor:
    """float32 ``(samples, channels)`` -> ``(samples,)``: the mean over channels, or one
    ``channel`` (1-based, as Raven numbers them)."""
    if channel is not None:
        if not 1 <= channel <= data.shape[1]:
            raise AudioFileError(f"channel {channel} asked for, but the file has {data.shape[1]} channel(s)")
        return torch.from_numpy(np.ascontiguousarray(data[:, channel - 1]))
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono))


def audio_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be used as audio, or None: from its header (no decoding of
    integer PCM, which cannot hold NaN); floating-point files are also checked for NaN
    and infinite samples."""
    try:
        info = sf.info(path)
    except Exception as error:
        return f"cannot read audio ({error})"
    if info.frames <= 0:
        return "the file holds no samples"
    if info.samplerate <= 0:
        return f"invalid sample rate {info.samplerate}"
    if info.subtype in ("FLOAT", "DOUBLE"):
        try:
            for block in sf.blocks(path, blocksize=1 << 18, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    return "the file holds NaN or infinite sample values"
        except Exception as error:
            return f"cannot read audio ({error})"
    return None


def scan_audio(paths: Iterable[str]) -> List[Tuple[str, str]]:
    """``(path, problem)`` for every file whose header says it cannot be used."""
    found = []
    for path in paths:
        problem = audio_problem(path)
        if problem is not None:
            found.append((path, problem))
    return found


# --------------------------------------------------------------------------- resampling
def resampled_length(n_samples: int, orig_sr: int, new_sr: int) -> int:
    """Samples after resampling: ``int(n * new / orig)`` (resampy's rule, rounding down)."""
    return n_samples if orig_sr == new_sr else int(n_samples * (float(new_sr) / orig_sr))


def bessel_i0(x) -> np.ndarray:
    return torch.special.i0(torch.as_tensor(x, dtype=torch.float64)).numpy()      # numpy's i0 is slow


def filter_table(index: np.ndarray, gain: float) -> np.ndarray:
    """resampy's kaiser_best table (float64) at integer positions ``index`` (8192 per
    zero crossing), times ``gain``."""
    zeros, rolloff, beta, precision = (KAISER_BEST[k] for k in ("zero_crossings", "rolloff", "beta", "precision"))
    u = index / precision
    window = bessel_i0(beta * np.sqrt(np.clip(1 - (u / zeros) ** 2, 0, None))) / bessel_i0(beta)
    return gain * rolloff * np.sinc(rolloff * u) * window


def filter_wing(frac: float, step: int, gain: float) -> np.ndarray:
    """Weights of one side of an output sample, nearest input first, as resampy computes
    them: the table read at ``frac * 8192 + i * step`` (``step = int(scale * 8192)``),
    interpolated linearly between its entries, for as many taps as the table holds."""
    size = KAISER_BEST["zero_crossings"] * KAISER_BEST["precision"] + 1
    position = frac * KAISER_BEST["precision"]
    offset = int(position)
    index = offset + step * np.arange((size - offset) // step)
    low = filter_table(index, gain)
    high = np.where(index + 1 < size, filter_table(np.minimum(index + 1, size - 1), gain), low)
    return low + (position - offset) * (high - low)


@lru_cache(maxsize=16)
def resampling_kernel(orig_sr: int, new_sr: int) -> Tuple[torch.Tensor, int, int, int]:
    """resampy's kaiser_best resampling as polyphase filters ``(phases, 1, taps)``, with
    the input samples the first tap lies before a period's start (``left``) and the
    reduced rates: per period of ``orig`` input samples (rates divided by their gcd),
    output ``j`` sits at input time ``t = j * orig / new`` and takes input ``n - i`` with
    the left wing's weight ``i`` and input ``n + 1 + k`` with the right wing's weight
    ``k`` (``n = floor(t)``; the wings start at ``scale * (t - n)`` and ``scale * (n + 1 - t)``,
    ``scale = min(1, new_sr / orig_sr)``). Weights in float64, rounded once to float32."""
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    scale = min(1.0, new_sr / orig_sr)         # also the gain: resampy scales the table when downsampling
    step = int(scale * KAISER_BEST["precision"])
    rows = []
    for j in range(new):
        n, rest = divmod(j * orig, new)
        frac = scale * rest / new
        left, right = filter_wing(frac, step, scale), filter_wing(scale - frac, step, scale)
        rows.append((n - len(left) + 1, np.concatenate([left[::-1], right])))
    first = min(start for start, _ in rows)
    kernel = np.zeros((new, max(start + len(w) for start, w in rows) - first))
    for j, (start, weights) in enumerate(rows):
        kernel[j, start - first:start - first + len(weights)] = weights
    return torch.from_numpy(kernel).float().unsqueeze(1), -first, orig, new


def resample(signal: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis with resampy's kaiser_best filter,
    ``resampled_length`` samples long (as resampy; zeros outside the signal)."""
    if orig_sr == new_sr:
        return signal
    kernel, left, orig, _ = resampling_kernel(orig_sr, new_sr)
    flat = signal.reshape(-1, signal.shape[-1])
    padded = F.pad(flat, (left, kernel.shape[-1] - left + orig)).unsqueeze(1)
    out = F.conv1d(padded, kernel.to(signal.device), stride=orig)          # (batch, phases, periods)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    return out[:, :resampled_length(signal.shape[-1], orig_sr, new_sr)].reshape(*signal.shape[:-1], -1)


def load_audio(path: str, sr: int, channel: Optional[int] = None) -> torch.Tensor:
    """Mono float32 ``(1, n)`` at ``sr``: channels averaged (or ``channel``, 1-based),
    resampled when needed."""
    data, rate = read_audio(path)
    try:
        mono = to_mono(data, channel)
    except AudioFileError as error:
        raise AudioFileError(f"{path}: {error}") from None
    return resample(mono.unsqueeze(0), rate, sr)


# ---------------------------------------------------------------------- long recordings
class SignalReader:
    """Random access to a recording as mono float32 at the target rate, read from disk
    block by block; resampled blocks equal the whole-file resampling (overlap margins
    larger than the filter)."""

    def __init__(self, path: str, sr: int, channel: Optional[int] = None):
        # set first: __del__ runs after a failed __init__ too
        self.path, self.sr, self._handle, self._remote, self._source = path, sr, None, None, path
        if "://" in path:                   # a URL (data.remote): read block by block over the network
            try:
                self._source, self._remote = open_recording(path)
            except RemoteError as error:
                raise AudioFileError(str(error)) from None
            try:
                info = sf.info(self._source)
            except Exception as error:
                self.close()
                raise AudioFileError(f"{path}: cannot read audio ({error})") from None
            if info.frames <= 0:
                self.close()
                raise AudioFileError(f"{path}: the file holds no samples")
        else:
            problem = audio_problem(path)
            if problem is not None:
                raise AudioFileError(f"{path}: {problem}")
            info = sf.info(path)
        self.rate, self.n_in, self.channels = info.samplerate, info.frames, info.channels
        if channel is not None and not 1 <= channel <= self.channels:
            raise AudioFileError(f"{path}: channel {channel} asked for, but the file has {self.channels} channel(s)")
        self.channel = channel          # None: the mean of the channels; else one channel (1-based)
        g = math.gcd(self.rate, sr)
        self.up, self.down = sr // g, self.rate // g  # output/input samples per period
        reach = resampling_kernel(self.rate, sr)[0].shape[-1] if self.rate != sr else 0   # input samples
        self.margin = self.down * (reach // self.down + 2)
        self.n_samples = resampled_length(self.n_in, self.rate, sr)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if getattr(self, "_remote", None) is not None:
            self._remote.close()
            self._remote = None

    def __del__(self):
        self.close()

    @property
    def seconds(self) -> float:
        return self.n_in / self.rate

    def _read_input(self, start: int, stop: int) -> torch.Tensor:
        try:
            if self._handle is None:           # opened once, read block by block
                if hasattr(self._source, "seek"):
                    self._source.seek(0)
                self._handle = sf.SoundFile(self._source)
            self._handle.seek(start)
            data = self._handle.read(stop - start, dtype="float32", always_2d=True)
        except Exception as error:
            raise AudioFileError(f"{self.path}: cannot read audio ({error})") from None
        check_finite(data, self.path)
        return to_mono(data, self.channel)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples ``[start, stop)`` of the mono signal at the target rate."""
        stop = min(stop, self.n_samples)
        if self.rate == self.sr:
            return self._read_input(start, stop)
        first_period = start // self.up
        in_start = max(0, first_period * self.down - self.margin)
        in_stop = min(self.n_in, math.ceil(stop * self.down / self.up) + self.margin)
        chunk = resample(self._read_input(in_start, in_stop).unsqueeze(0), self.rate, self.sr)[0]
        offset = in_start // self.down * self.up
        return chunk[start - offset:stop - offset]


def recording_files(path: str, extensions: Iterable[str] = RECORDING_EXTENSIONS) -> List[str]:
    """A single file, or every audio file below a folder."""
    return files_below(path, lambda name: has_extension(name, extensions))
