"""Windows over long recordings, as the original's prediction cuts them (spec §8.2):
``W = ceil(sequence_len * sr)``, ``H = ceil(hop * sr)`` samples, ``n = max(ceil((L + 1 - W) / H), 1)``
windows, window ``i`` covering samples ``[i H, min(i H + W, L))``.

``RecordingWindows`` reads a recording block by block, computes every distinct STFT
frame of a block once (even where windows overlap), and cuts the windows from those
frames: memory does not grow with the recording, and the inputs equal the per-window
path of ``StridedAudioDataset`` (the original's way) within float32 rounding.
"""

import math
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.utils.data

from .audio_io import SignalReader, load_audio
from .features import FeatureOptions, frame_power, min_max_normalize, pre_emphasis


@dataclass(frozen=True)
class WindowGeometry:
    """Window and hop in samples, window count and recording length (samples at ``sr``)."""

    window: int
    step: int
    count: int
    n_samples: int
    sr: int

    @classmethod
    def from_seconds(cls, sequence_len: float, hop: float, sr: int, n_samples: int,
                     last: Optional[float] = None) -> "WindowGeometry":
        """Every whole window (the original's rule); with ``last`` (seconds), also the windows
        that start before the end and hold at least ``last`` seconds of the recording, zero-padded
        (BirdNET-Analyzer's rule, so the end of a recording is seen too)."""
        window = int(math.ceil(sequence_len * sr))
        step = int(math.ceil(hop * sr))
        if window < 1 or step < 1:
            raise ValueError(f"window ({sequence_len} s) and hop ({hop} s) must be positive")
        count = max(int(math.ceil((n_samples + 1 - window) / step)), 1)
        if last is not None:
            count = max(count, (n_samples - int(math.ceil(last * sr))) // step + 1)
        return cls(window, step, count, n_samples, sr)

    def span(self, index: int) -> Tuple[int, int]:
        """First and last sample of window ``index`` (the last inclusive, as logged)."""
        start = index * self.step
        return start, min(start + self.window - 1, self.n_samples - 1)

    def seconds(self, index: int) -> Tuple[float, float]:
        """Start and end of window ``index`` in seconds, rounded to 3 decimals as logged."""
        start, end = self.span(index)
        return round(start / self.sr, 3), round(end / self.sr, 3)


class StridedAudioDataset(torch.utils.data.Dataset):
    """Windows of a whole recording loaded into memory, each pre-emphasised and
    transformed on its own (the original's prediction path). As the original,
    ``sequence_len`` and ``hop`` are in samples."""

    def __init__(self, file_name: str, sequence_len: int, hop: int, sr: int = 44100,
                 fft_size: int = 4096, fft_hop: int = 441, n_freq_bins: int = 256,
                 freq_compression: str = "linear", f_min: float = 200, f_max: float = 18000,
                 min_max_normalize: bool = False, options: Optional[FeatureOptions] = None):
        self.options = options or FeatureOptions(
            sr=sr, n_fft=fft_size, hop_length=fft_hop, n_freq_bins=n_freq_bins,
            freq_compression=freq_compression, fmin=f_min, fmax=f_max, min_max_norm=min_max_normalize)
        self.file_name = file_name
        self.sequence_len, self.hop = int(sequence_len), int(hop)
        self.audio = load_audio(file_name, self.options.sr)
        self.n_frames = self.audio.shape[-1]

    def __len__(self) -> int:
        return max(int(math.ceil((self.n_frames + 1 - self.sequence_len) / self.hop)), 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.hop
        segment = self.audio[:, start:min(start + self.sequence_len, self.n_frames)]
        return self.options.features(self.options.spectrogram(segment))


class RecordingWindows:
    """The windows of one recording for one set of feature options.

    Iterating yields ``(first window index, inputs (B, 1, T, F))`` in order, ``batch_size``
    windows at a time; ``geometry`` gives each window's samples and seconds. ``reader``
    may be an already opened ``SignalReader`` of ``path`` at ``options.sr``; ``count``
    overrides the number of windows (a second model of an ensemble follows the first's
    count; windows past the end are zero-padded). ``device`` is where the spectrogram
    frames are computed (a GPU when the model runs there).
    """

    def __init__(self, path: str, options: FeatureOptions, sequence_len: float, hop: float,
                 batch_size: int = 16, reader: Optional[SignalReader] = None,
                 device: torch.device = torch.device("cpu"), count: Optional[int] = None,
                 channel: Optional[int] = None):
        self.path, self.options, self.batch_size, self.device = path, options, batch_size, device
        self.reader = reader or SignalReader(path, options.sr, channel)
        geometry = WindowGeometry.from_seconds(sequence_len, hop, options.sr, self.reader.n_samples)
        if count is not None:
            geometry = WindowGeometry(geometry.window, geometry.step, count, geometry.n_samples, geometry.sr)
        self.geometry = geometry
        self.length = min(geometry.window, self.reader.n_samples)
        n_fft, hop_length = options.n_fft, options.hop_length
        self.offsets = torch.arange(1 + max(0, self.length - n_fft) // hop_length) * hop_length

    def __len__(self) -> int:
        return self.geometry.count

    def __iter__(self) -> Iterator[Tuple[int, torch.Tensor]]:
        for first in range(0, self.geometry.count, self.batch_size):
            yield first, self.batch(first, min(first + self.batch_size, self.geometry.count))

    def batch(self, first: int, last: int) -> torch.Tensor:
        """Network inputs of windows ``first .. last-1``."""
        o = self.options
        frames, index = self._frames(first, last)
        power = frame_power(frames.to(self.device, non_blocking=True), o.n_fft)
        levels = o.level(o.compress(power.unsqueeze(0)))[0]
        if o.min_max_norm:  # per window, after gathering
            return min_max_normalize(levels[index.to(levels.device)].unsqueeze(1))
        return o.normalize(levels)[index.to(levels.device)].unsqueeze(1)  # element-wise: on distinct frames

    def _read(self, start: int, stop: int, size: int) -> torch.Tensor:
        """Pre-emphasised samples ``[start, stop)``, zero-padded to ``size``."""
        signal = pre_emphasis(self.reader.read(start, stop), self.options.preemphases)
        return torch.nn.functional.pad(signal, (0, max(0, size - signal.shape[0])))

    def _frames(self, first: int, last: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The distinct STFT frames ``(N, n_fft)`` of windows ``first..last-1`` and, per
        window and frame, the index of its frame ``(B, T)``. The first sample of a window
        has zero weight in the periodic Hann window, so pre-emphasising a whole block
        instead of each window changes nothing."""
        n_fft, step, length, offsets = self.options.n_fft, self.geometry.step, self.length, self.offsets
        taps = torch.arange(n_fft)
        if step >= length:   # windows do not overlap: read only the windows, not the gaps
            span = max(length, int(offsets[-1]) + n_fft)
            signal = torch.stack([self._read(w * step, w * step + length, span) for w in range(first, last)])
            frames = signal[:, offsets.unsqueeze(1) + taps].reshape(-1, n_fft)
            return frames, torch.arange(frames.shape[0]).view(last - first, -1)
        block_start = first * step
        starts = (torch.arange(first, last) * step - block_start).unsqueeze(1) + offsets
        signal = self._read(block_start, (last - 1) * step + length, int(starts.max()) + n_fft)
        unique, inverse = torch.unique(starts, return_inverse=True)
        return signal[unique.unsqueeze(1) + taps], inverse


@dataclass(frozen=True)
class AudioOptions:
    """What a foundation encoder takes (``models.foundation``): raw samples at ``sr`` in
    windows of ``window`` seconds. Stored in a model file's ``dataOpts`` with ``input:
    audio``; ``fmin``/``fmax`` (the band, for Raven tables) are the whole band."""

    sr: int
    window: float
    min_max_norm: bool = False

    @property
    def fmin(self) -> int:
        return 0

    @property
    def fmax(self) -> int:
        return self.sr // 2

    def data_opts(self) -> Dict:
        return {"input": "audio", "sr": self.sr, "window": self.window, "fmin": self.fmin, "fmax": self.fmax}

    def jit_description(self, classes: dict, sequence_len_ms: float = 0.0) -> dict:
        """The descriptive ``transforms`` entry of a TorchScript file: raw audio in."""
        return {"load_audio": f"{{sr: {self.sr}, mono : True}}", "input": "{raw audio, (batch, 1, samples)}",
                "window": f"{{seconds : {self.window}, samples : {int(round(self.window * self.sr))}}}"}

    @staticmethod
    def describes(data_opts: Dict) -> bool:
        return data_opts.get("input") == "audio"

    @classmethod
    def from_data_opts(cls, data_opts: Dict) -> "AudioOptions":
        return cls(int(data_opts["sr"]), float(data_opts["window"]))


LAST_WINDOW = 1.0      # seconds of a recording that a last, zero-padded raw-audio window must hold (BirdNET-Analyzer's)


def last_window(options: "AudioOptions") -> float:
    """Seconds of the recording that a last, padded window must hold (at most its length)."""
    return min(LAST_WINDOW, options.window)


class AudioWindows:
    """The windows of one recording as raw samples (a foundation encoder's input):
    ``(first window index, (B, window samples))`` batches, each batch read in one block,
    the windows past the end zero-padded: as BirdNET-Analyzer, every window that starts
    before the end and holds at least ``LAST_WINDOW`` seconds of the recording (a recording
    shorter than a window is one window, padded). BirdNET-Analyzer pads with noise; zeros
    here, so a window's vector never depends on a random draw. ``count`` and ``channel`` as
    for ``RecordingWindows``."""

    def __init__(self, path: str, options: AudioOptions, hop: float, batch_size: int = 16,
                 reader: Optional[SignalReader] = None, count: Optional[int] = None, channel: Optional[int] = None):
        self.options, self.batch_size = options, batch_size
        self.reader = reader or SignalReader(path, options.sr, channel)
        geometry = WindowGeometry.from_seconds(options.window, hop, options.sr, self.reader.n_samples,
                                               last_window(options))
        if count is not None:
            geometry = WindowGeometry(geometry.window, geometry.step, count, geometry.n_samples, geometry.sr)
        self.geometry = geometry

    def __len__(self) -> int:
        return self.geometry.count

    def __iter__(self) -> Iterator[Tuple[int, torch.Tensor]]:
        window, step = self.geometry.window, self.geometry.step
        for first in range(0, self.geometry.count, self.batch_size):
            last = min(first + self.batch_size, self.geometry.count)
            start, stop = first * step, (last - 1) * step + window
            block = self.reader.read(start, min(stop, self.reader.n_samples))
            block = torch.nn.functional.pad(block, (0, stop - start - block.shape[0]))
            yield first, torch.stack([block[i * step:i * step + window] for i in range(last - first)])
