"""Datasets: labelled training clips, and windows over long recordings.

``Dataset`` keeps the original's name and constructor arguments. For recordings there
are two paths with the same numbers: ``StridedAudioDataset`` (the original's way: load
the whole file, one spectrogram per window) and ``iter_window_batches`` (read the file in
blocks, compute each spectrogram frame once, cut the windows from them; memory does not
grow with the recording's length).
"""

import logging
import math
import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import soundfile as sf
import torch
import torch.utils.data

from data.filenames import class_name, index_classes
from data.transforms import (
    KAISER_BEST, AudioFileError, CachedSpectrogram, FeatureOptions, RandomAddNoise,
    RandomAmplitude, RandomPitchShift, RandomTimeStretch, frame_power, load_audio,
    min_max_normalize, pad_or_crop, pre_emphasis, resample, to_mono,
)

log = logging.getLogger("ANIMAL-SPOT")


def noise_files_in(noise_dir: Optional[str]) -> List[str]:
    """``*.wav`` directly inside ``noise_dir`` (sorted), or [] without a folder."""
    if not noise_dir:
        return []
    if not os.path.isdir(noise_dir):
        raise FileNotFoundError(f"--noise_dir {noise_dir} is not a folder")
    return [os.path.join(noise_dir, n) for n in sorted(os.listdir(noise_dir))
            if n.endswith(".wav") and os.path.isfile(os.path.join(noise_dir, n))]


class Dataset(torch.utils.data.Dataset):
    """Labelled clips -> ``(spectrogram (1, seq_len, F), {"file_name", "call"[, "ground_truth"]})``."""

    def __init__(
        self,
        file_names: Sequence[str],
        working_dir: Optional[str] = None,
        cache_dir: Optional[str] = None,
        classes: Union[Mapping[str, int], Sequence[str], None] = None,
        sr: int = 44100,
        n_fft: int = 4096,
        hop_length: int = 441,
        freq_compression: str = "linear",
        n_freq_bins: int = 256,
        f_min: float = 0,
        f_max: float = 18000,
        seq_len: int = 128,
        augmentation: bool = False,
        noise_files: Sequence[str] = (),
        min_max_normalize: bool = False,
        dataset_name: str = "",
        preemphases: float = 0.98,
        min_level_db: float = -100,
        ref_level_db: float = 20,
    ):
        self.file_names = list(file_names)
        self.working_dir = working_dir
        self.dataset_name = dataset_name
        if classes is None:
            classes = index_classes(sorted({class_name(f) for f in self.file_names}))
        elif not isinstance(classes, Mapping):
            classes = index_classes(classes)
        self.class_dist_dict: Dict[str, int] = dict(classes)
        self.options = FeatureOptions(
            sr=sr, preemphases=preemphases, n_fft=n_fft, hop_length=hop_length,
            n_freq_bins=n_freq_bins, fmin=f_min, fmax=f_max, freq_compression=freq_compression,
            min_level_db=min_level_db, ref_level_db=ref_level_db, min_max_norm=min_max_normalize,
        )
        self.seq_len = seq_len
        self.augmentation = augmentation
        self.spectrogram = CachedSpectrogram(self.options, cache_dir)
        names = [class_name(f) for f in self.file_names]
        self.labels = [self.class_dist_dict[name] for name in names]

        log.info(f"Init dataset {dataset_name}...")
        log.debug(f"Number of files : {len(self.file_names)}")
        for name in self.class_dist_dict:
            log.debug(f"Number of samples in {dataset_name} for {name}: {names.count(name)}")

        if augmentation:
            log.debug("Init augmentation transforms for time and pitch shift")
            self.augment = [RandomAmplitude(), RandomPitchShift(), RandomTimeStretch()]
        else:
            log.debug("Running without augmentation")
            self.augment = []
        noise_files = list(noise_files) if augmentation else []
        if noise_files:
            log.debug("Init augmentation transform for random noise addition")
            noise_aug = [RandomTimeStretch(), RandomPitchShift()]
            self.add_noise = RandomAddNoise(
                noise_files, self.spectrogram,
                lambda s: self.options.compress(_chain(noise_aug, s)), min_length=seq_len)
        else:
            log.debug("No noise augmentation")
            self.add_noise = None
        log.debug("Init min-max-normalization activated" if min_max_normalize
                  else "Init 0/1-dB-normalization activated")

    def __len__(self) -> int:
        return len(self.file_names)

    def path_of(self, index: int) -> str:
        name = self.file_names[index]
        return os.path.join(self.working_dir, name) if self.working_dir else name

    def __getitem__(self, index: int):
        path = self.path_of(index)
        spec = self.spectrogram(path)
        spec = self.options.compress(_chain(self.augment, spec))
        label = {"file_name": path, "call": self.labels[index]}
        if self.add_noise is not None:
            noisy, clean = self.add_noise(spec)
            pair = torch.cat([self.options.finish(noisy), self.options.finish(clean)])
            pair = pad_or_crop(pair, self.seq_len, random_offset=True)
            label["ground_truth"] = pair[1:2]
            return pair[0:1], label
        item = pad_or_crop(self.options.finish(spec), self.seq_len, random_offset=self.augmentation)
        return item, label


def _chain(transforms, spec):
    for transform in transforms:
        spec = transform(spec)
    return spec


# ---------------------------------------------------------------------- recordings
def window_geometry(sequence_len: float, hop: float, sr: int, n_samples: int) -> Tuple[int, int, int]:
    """Window and hop in samples and the number of windows, as the original:
    ``W = ceil(seq * sr)``, ``H = ceil(hop * sr)``, ``n = max(ceil((L + 1 - W) / H), 1)``."""
    window = int(math.ceil(sequence_len * sr))
    step = int(math.ceil(hop * sr))
    count = max(int(math.ceil((n_samples + 1 - window) / step)), 1)
    return window, step, count


class StridedAudioDataset(torch.utils.data.Dataset):
    """Windows of a whole recording loaded into memory, each pre-emphasised and
    transformed on its own (the original's prediction path). As the original,
    ``sequence_len`` and ``hop`` are in samples (see ``window_geometry``)."""

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


class SignalReader:
    """Random access to a recording as mono float32 at the target rate, read from disk
    block by block; resampled blocks equal the whole-file resampling (overlap margins
    larger than the filter)."""

    def __init__(self, path: str, sr: int):
        self.path, self.sr = path, sr
        try:
            info = sf.info(path)
        except Exception as error:
            raise AudioFileError(f"{path}: cannot read audio ({error})") from None
        self.rate, self.n_in = info.samplerate, info.frames
        if self.n_in <= 0:
            raise AudioFileError(f"{path}: the file holds no samples")
        g = math.gcd(self.rate, sr)
        self.up, self.down = sr // g, self.rate // g  # output/input samples per period
        width = math.ceil(KAISER_BEST["lowpass_filter_width"] * self.down
                          / (min(self.down, self.up) * KAISER_BEST["rolloff"]))
        self.margin = self.down * (width // self.down + 2)
        self.n_samples = self.n_in if self.rate == sr else math.ceil(self.n_in * sr / self.rate)

    def _read_input(self, start: int, stop: int) -> torch.Tensor:
        with sf.SoundFile(self.path) as handle:
            handle.seek(start)
            data = handle.read(stop - start, dtype="float32", always_2d=True)
        return to_mono(data)

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


def _read_emphasised(reader: SignalReader, options: FeatureOptions, start: int, stop: int, size: int) -> torch.Tensor:
    """Pre-emphasised samples ``[start, stop)``, zero-padded to ``size``."""
    signal = pre_emphasis(reader.read(start, stop), options.preemphases)
    return torch.nn.functional.pad(signal, (0, max(0, size - signal.shape[0])))


def _block_frames(reader: SignalReader, options: FeatureOptions, first: int, last: int, step: int,
                  length: int, offsets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The distinct STFT frames ``(N, n_fft)`` of windows ``first..last-1`` and, per window
    and frame, the index of its frame ``(B, T)``."""
    n_fft = options.n_fft
    taps = torch.arange(n_fft)
    if step >= length:   # windows do not overlap: read only the windows, not the gaps
        span = max(length, int(offsets[-1]) + n_fft)
        signal = torch.stack([_read_emphasised(reader, options, w * step, w * step + length, span)
                              for w in range(first, last)])
        frames = signal[:, offsets.unsqueeze(1) + taps].reshape(-1, n_fft)
        return frames, torch.arange(frames.shape[0]).view(last - first, -1)
    seg_start = first * step
    starts = (torch.arange(first, last) * step - seg_start).unsqueeze(1) + offsets
    signal = _read_emphasised(reader, options, seg_start, (last - 1) * step + length, int(starts.max()) + n_fft)
    unique, inverse = torch.unique(starts, return_inverse=True)
    return signal[unique.unsqueeze(1) + taps], inverse


def iter_window_batches(path: str, options: FeatureOptions, sequence_len: float, hop: float,
                        batch_size: int, reader: Optional[SignalReader] = None
                        ) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield ``(first window index, inputs (B, 1, T, F))`` over a recording, block by block.

    Each block's signal is read once; every distinct STFT frame is computed once, even
    where windows overlap; windows are then gathered from those frames. The inputs equal
    ``StridedAudioDataset``'s (the first sample of a window has zero weight in the
    periodic Hann window, so per-window pre-emphasis changes nothing). ``reader`` may be
    an already opened ``SignalReader`` of ``path``.
    """
    reader = reader or SignalReader(path, options.sr)
    window, step, n_windows = window_geometry(sequence_len, hop, options.sr, reader.n_samples)
    length = min(window, reader.n_samples)
    offsets = torch.arange(1 + max(0, length - options.n_fft) // options.hop_length) * options.hop_length
    for first in range(0, n_windows, batch_size):
        last = min(first + batch_size, n_windows)
        frames, index = _block_frames(reader, options, first, last, step, length, offsets)
        levels = options.level(options.compress(frame_power(frames, options.n_fft).unsqueeze(0)))[0]
        if options.min_max_norm:  # per window, after gathering
            yield first, min_max_normalize(levels[index].unsqueeze(1))
        else:  # element-wise, cheaper on the distinct frames
            yield first, options.normalize(levels)[index].unsqueeze(1)
