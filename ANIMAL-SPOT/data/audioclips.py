"""Labelled clips as raw audio, for a network whose input is the waveform (``--backbone
birdnet``): each clip resampled to the network's rate and padded or cropped to its window,
as ``Dataset`` pads or crops spectrograms to ``--sequence_len`` (a random offset with
augmentation, else the clip's start).

Augmentation on raw audio (``--augmentation``), drawn per item from the run's seed:
* time shift: where the clip is shorter than the window, it lands at a random place in it;
  where longer, a random stretch of it is taken;
* gain: a random level change of -6 to +6 dB (BirdNET scales every window by its own
  range, so this matters where noise is added);
* noise: white noise at a signal-to-noise ratio of 3 to 30 dB, on half the items.
"""

import random
from typing import Optional, Sequence

import numpy as np
import torch

from ..utils.classmap import ClassMap
from ..utils.seeding import item_rng
from .audio_io import load_audio
from .audiodataset import FileNameDataset, class_map_of
from .filenames import class_name
from .recording import AudioOptions

GAIN_DB = (-6.0, 6.0)
NOISE_SNR_DB = (3.0, 30.0)
NOISE_SHARE = 0.5


def fit_window(signal: torch.Tensor, length: int, offset: Optional[float]) -> torch.Tensor:
    """``signal`` (samples) padded with zeros or cropped to ``length``; ``offset`` in [0, 1)
    places it (None: at the start)."""
    spare = abs(length - signal.shape[0])
    start = int(offset * (spare + 1)) if offset is not None else 0
    if signal.shape[0] >= length:
        return signal[start:start + length]
    return torch.nn.functional.pad(signal, (start, length - signal.shape[0] - start))


class AudioClipDataset(FileNameDataset):
    """Labelled clips -> ``(waveform (1, samples), {"file_name", "call"})``."""

    def __init__(self, file_names: Sequence[str], working_dir: Optional[str], classes: ClassMap,
                 options: AudioOptions, augmentation: bool = False, dataset_name: str = "",
                 seed: Optional[int] = None, channel: Optional[int] = None):
        super().__init__(file_names, working_dir, dataset_name=dataset_name)
        self.class_map = class_map_of(classes, self.file_names)
        self.options, self.augmentation, self.seed, self.epoch, self.channel = options, augmentation, seed, 0, channel
        self.length = int(round(options.window * options.sr))
        self.labels = [self.class_map.index(class_name(f)) for f in self.file_names]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        path = self.path_of(index)
        rng = random if self.seed is None else item_rng(self.seed, epoch, index)
        signal = load_audio(path, self.options.sr, self.channel).reshape(-1).float()
        item = fit_window(signal, self.length, rng.random() if self.augmentation else None)
        if self.augmentation:
            item = augment(item, rng)
        return item.unsqueeze(0), {"file_name": path, "call": self.labels[index]}


def augment(item: torch.Tensor, rng) -> torch.Tensor:
    """Gain, and on some items white noise (see the module's notes)."""
    item = item * 10 ** (rng.uniform(*GAIN_DB) / 20)
    if rng.random() < NOISE_SHARE:
        power = float(item.pow(2).mean())
        if power > 0:
            snr = 10 ** (rng.uniform(*NOISE_SNR_DB) / 10)
            noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(item.shape[0]).astype(np.float32)
            item = item + torch.from_numpy(noise) * float(np.sqrt(power / snr))
    return item
