"""Datasets and the original's public names of ``data.audiodataset`` (spec §14).

``Dataset`` is the training dataset: labelled clips -> ``(spectrogram (1, seq_len, F),
{"file_name", "call"[, "ground_truth"]})``. It takes its preprocessing as one
``FeatureOptions`` (``options=``); the original's keyword arguments still work.

Reproducibility: with a ``seed``, each item's augmentation draws come from a generator
keyed on (seed, epoch, item) (``utils.seeding.item_rng``), so loader workers and resumed
runs draw the same numbers. The epoch reaches the workers through the sampler: items
are requested as ``(epoch, index)`` pairs (``EpochKeys``); a plain index uses the epoch
set with ``set_epoch``.
"""

import logging
import os
import random
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.utils.data

from . import transforms
from .audio_io import AudioFileError, load_audio  # noqa: F401  (public names)
from .augment import (BackgroundOverlay, RandomAddNoise, RandomAmplitude, RandomPitchShift, RandomTimeStretch,
                          SpecAugment, chain)
from ..utils.seeding import item_rng
from .cache import CachedSpectrogram
from .features import FeatureOptions, pad_or_crop
from .filenames import YEAR_MAX, YEAR_MIN, class_name, find_audio_files, tape_key
from .recording import StridedAudioDataset  # noqa: F401  (public name)
from .split import create_split, load_split, split_exists
from ..utils.classmap import ClassMap

log = logging.getLogger("ANIMAL-SPOT")

DefaultSpecDatasetOps = FeatureOptions().data_opts()


def noise_files_in(noise_dir: Optional[str]) -> List[str]:
    """``*.wav`` directly inside ``noise_dir`` (sorted). A value that is not a folder (the
    original config template's placeholder) gives a warning naming it and no noise."""
    if not noise_dir:
        return []
    if not os.path.isdir(noise_dir):
        log.warning(f"--noise_dir {noise_dir} is not a folder; training without noise augmentation")
        return []
    return [os.path.join(noise_dir, n) for n in sorted(os.listdir(noise_dir))
            if n.lower().endswith(".wav") and os.path.isfile(os.path.join(noise_dir, n))]


def get_audio_files_from_dir(path: str) -> Iterator[str]:
    """The ``.wav`` files below ``path``, relative to it (backup folders skipped)."""
    yield from find_audio_files(path)


def get_tape_key(file: str, valid_years=None) -> Optional[str]:
    """``YEAR_TAPE`` (tape upper-cased) of a data_dir-relative path, or None."""
    key = tape_key(file)
    if key is None or valid_years is None:
        return key
    return key if int(key.split("_", 1)[0]) in valid_years else None


class CsvSplit:
    """Random split by file, kept in the original's CSV layout in ``working_dir``:
    ``load(split, files)`` reads an existing split or creates one from ``files``."""

    def __init__(self, split_fracs: Mapping[str, float], working_dir: Optional[str] = None,
                 seed: Optional[int] = None, split_per_dir: bool = False):
        if abs(sum(split_fracs.values()) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must sum to 1, not {sum(split_fracs.values())}")
        self.fractions = dict(split_fracs)
        self.working_dir = working_dir or "."
        self.rng = random.Random(seed)
        self.split_per_dir = split_per_dir
        self._split: Optional[Dict[str, List[str]]] = None

    def group_of(self, file: str) -> Optional[str]:
        return file

    def load(self, split: str, files: Optional[Sequence[str]] = None) -> List[str]:
        if split not in self.fractions:
            raise ValueError(f"unknown split {split!r}; the splits are {', '.join(self.fractions)}")
        if self._split is None:
            if split_exists(self.working_dir, list(self.fractions)):
                self._split = load_split(self.working_dir, list(self.fractions))
            elif files is None:
                raise ValueError(f"no split in {self.working_dir} and no files to create one")
            else:
                self._split = create_split(self.working_dir, list(files), self.rng, self.fractions,
                                           self.group_of, self.split_per_dir)
        return list(self._split[split])


class DatabaseCsvSplit(CsvSplit):
    """The year+tape split: all files of one YEAR_TAPE land in one partition."""

    valid_years = range(YEAR_MIN, YEAR_MAX + 1)

    def group_of(self, file: str) -> Optional[str]:
        return get_tape_key(file, self.valid_years)


class FileNameDataset(torch.utils.data.Dataset):
    """Items are file names (joined to ``working_dir``) passed through ``transform``."""

    def __init__(self, file_names: Sequence[str], working_dir: Optional[str] = None, transform=None,
                 logger_name: str = "TRAIN", dataset_name: Optional[str] = None):
        self.file_names = list(file_names)
        self.working_dir = working_dir
        self.transform = transform
        self.dataset_name = dataset_name

    def __len__(self) -> int:
        return len(self.file_names)

    def path_of(self, index: int) -> str:
        name = self.file_names[index]
        return os.path.join(self.working_dir, name) if self.working_dir else name

    def __getitem__(self, index: int):
        path = self.path_of(index)
        return self.transform(path) if self.transform else path


class AudioDataset(FileNameDataset):
    """Items are loaded signals ``(1, n)`` (``(channels, n)`` unless ``mono``) at ``sr``."""

    def __init__(self, file_names: Sequence[str], working_dir: Optional[str] = None, sr: int = 44100,
                 mono: bool = True, *args, **kwargs):
        super().__init__(file_names, working_dir, None, *args, **kwargs)
        self.sr, self.mono = sr, mono

    def __getitem__(self, index: int) -> torch.Tensor:
        return transforms.load_audio(self.path_of(index), self.sr, self.mono)


def class_map_of(classes: Union[ClassMap, Mapping[str, int], Sequence[str], None],
                 file_names: Sequence[str]) -> ClassMap:
    if isinstance(classes, ClassMap):
        return classes
    if classes is None:
        return ClassMap.from_names(sorted({class_name(f) for f in file_names}))
    if isinstance(classes, Mapping):
        return ClassMap.from_dict(classes)
    return ClassMap.from_names(classes)


class Dataset(FileNameDataset):
    """Labelled clips -> ``(spectrogram (1, seq_len, F), {"file_name", "call"[, "ground_truth"]})``."""

    def __init__(
        self,
        file_names: Sequence[str],
        working_dir: Optional[str] = None,
        cache_dir: Optional[str] = None,
        classes: Union[ClassMap, Mapping[str, int], Sequence[str], None] = None,
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
        options: Optional[FeatureOptions] = None,
        seed: Optional[int] = None,
        spec_augment: Optional[SpecAugment] = None,
        background_files: Sequence[str] = (),
        background_snr: Tuple[float, float] = (0.0, 20.0),
        channel: Optional[int] = None,
    ):
        super().__init__(file_names, working_dir, dataset_name=dataset_name)
        self.class_map = class_map_of(classes, self.file_names)
        self.class_dist_dict: Dict[str, int] = self.class_map.to_dict()
        self.options = options or FeatureOptions(
            sr=sr, n_fft=n_fft, hop_length=hop_length, n_freq_bins=n_freq_bins, fmin=f_min, fmax=f_max,
            freq_compression=freq_compression, min_max_norm=min_max_normalize)
        self.seq_len = seq_len
        self.augmentation = augmentation
        self.seed, self.epoch = seed, 0
        self.spectrogram = CachedSpectrogram(self.options, cache_dir, channel)
        names = [class_name(f) for f in self.file_names]
        self.labels = [self.class_map.index(name) for name in names]

        log.info(f"Init dataset {dataset_name}...")
        log.debug(f"Number of files : {len(self.file_names)}")
        for name in self.class_dist_dict:
            log.debug(f"Number of samples in {dataset_name} for {name}: {names.count(name)}")
        self._original_augmentation(augmentation, noise_files)
        log.debug("Init min-max-normalization activated" if self.options.min_max_norm
                  else "Init 0/1-dB-normalization activated")
        # this project's augmentation (off unless asked; drawn after the original's)
        self.spec_augment = spec_augment
        self.background = BackgroundOverlay(background_files, self.spectrogram, background_snr) \
            if background_files else None

    def _original_augmentation(self, augmentation: bool, noise_files: Sequence[str]) -> None:
        """The original's amplitude, pitch and time transforms and its noise addition."""
        if augmentation:
            log.debug("Init augmentation transforms for time and pitch shift")
            self.augment = [RandomAmplitude(), RandomPitchShift(), RandomTimeStretch()]
        else:
            log.debug("Running without augmentation")
            self.augment = []
        noise_files = list(noise_files) if augmentation else []
        if noise_files:
            log.debug("Init augmentation transform for random noise addition")
            self.add_noise = RandomAddNoise(noise_files, self.spectrogram, NoiseTransform(self.options),
                                            min_length=self.seq_len)
        else:
            log.debug("No noise augmentation")
            self.add_noise = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, epoch: int, index: int):
        return random if self.seed is None else item_rng(self.seed, epoch, index)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        path = self.path_of(index)
        rng = self.rng(epoch, index)
        spec = chain(self.augment, self.spectrogram(path), rng)
        if self.background is not None:
            spec = self.background(spec, rng)
        spec = self.options.compress(spec)
        label = {"file_name": path, "call": self.labels[index]}
        if self.add_noise is not None:
            noisy, clean = self.add_noise(spec, rng)
            pair = torch.cat([self.options.finish(noisy), self.options.finish(clean)])
            pair = pad_or_crop(pair, self.seq_len, random_offset=True, rng=rng)
            label["ground_truth"] = pair[1:2]
            return self._masked(pair[0:1], rng), label
        item = pad_or_crop(self.options.finish(spec), self.seq_len, random_offset=self.augmentation, rng=rng)
        return self._masked(item, rng), label

    def _masked(self, item: torch.Tensor, rng) -> torch.Tensor:
        return self.spec_augment(item, rng) if self.spec_augment is not None else item


class NoiseTransform:
    """A noise file's spectrogram: time stretch, pitch shift (fresh draws, no amplitude
    change), then frequency compression."""

    def __init__(self, options: FeatureOptions):
        self.options = options
        self.augment = [RandomTimeStretch(), RandomPitchShift()]

    def __call__(self, spec: torch.Tensor, rng) -> torch.Tensor:
        return self.options.compress(chain(self.augment, spec, rng))


class EpochKeys(torch.utils.data.Sampler):
    """Wraps an index sampler so that it yields ``(epoch, index)`` keys: the epoch reaches
    the dataset in every loader worker, also persistent ones. Call ``set_epoch`` before
    each epoch; a wrapped sampler with ``set_epoch`` (distributed, class-balanced) gets it too."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


__all__ = ["AudioDataset", "AudioFileError", "CsvSplit", "Dataset", "DatabaseCsvSplit", "DefaultSpecDatasetOps",
           "EpochKeys", "FileNameDataset", "StridedAudioDataset", "get_audio_files_from_dir", "get_tape_key",
           "load_audio", "noise_files_in"]
