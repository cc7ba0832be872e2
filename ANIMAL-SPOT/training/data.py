"""From ``--data_dir`` to the three data loaders of a training run.

1. Discovery: the ``*.wav`` files, their classes (spec §3.4), checked against
   ``--num_classes`` (``auto`` takes the data's count).
2. A fast header scan of every file before the first epoch: unreadable, empty or
   non-audio files stop the run with one error listing all of them, or, with
   ``--filter_broken_audio``, are set aside (moved to ``bkp/`` before a first split, left
   out of a reused one) with a count. A worker never meets them mid-epoch.
3. The split: reused, or made by the main process while the others wait.
4. Loaders: items are keyed on (seed, epoch, index); training order comes from a
   shuffling or class-balanced sampler keyed on (seed, epoch); with several processes
   each takes its share, validation and test without padding.
"""

import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import soundfile as sf
import torch
from torch.utils.data import DataLoader

from ..data.audio_io import scan_audio
from ..data.augment import SpecAugment
from ..data.audioclips import AudioClipDataset
from ..data.audiodataset import Dataset, EpochKeys, noise_files_in
from ..data.recording import AudioOptions
from ..data.features import FeatureOptions
from ..data.filenames import class_name, discover_classes, filter_broken_audio, find_audio_files, tape_key, usable_files
from ..data.samplers import BalancedSampler, ShardSampler, ShuffleSampler, class_counts, sampling_weights
from ..data.bandwidth import band_warning, bands_of, class_bands
from ..data.split import PARTITIONS, get_split, remove_split, report_split, split_exists
from ..utils.classmap import ClassMap, check_class_count
from ..models.losses import class_weights, parse_boosts
from ..utils.runtime import Processes

log = logging.getLogger("ANIMAL-SPOT")


@dataclass
class TrainingData:
    split: Dict[str, List[str]]
    class_map: ClassMap
    options: FeatureOptions
    frames: int
    datasets: Dict[str, Dataset]
    loaders: Dict[str, DataLoader]           # this process's share
    single_loaders: Dict[str, DataLoader]    # whole val/test splits, one process (calibration)

    @property
    def train_counts(self) -> List[int]:
        return class_counts(self.datasets["train"].labels, len(self.class_map))


def discover(config, processes: Processes, log: logging.Logger) -> Tuple[Dict[str, List[str]], ClassMap]:
    """The split (made on the main process, read by the others) and the class map. With
    ``--folds`` the data folder's own split is neither made nor read: every usable file
    is returned under ``all``."""
    if not config.data_dir or not os.path.isdir(config.data_dir):
        raise ValueError(f"--data_dir {config.data_dir} is not a folder")
    if config.folds:
        split = {"all": usable_files(find_audio_files(config.data_dir))}
        if not split["all"]:
            raise ValueError(f"No .wav files below {config.data_dir}")
    made = False
    if not config.folds:
        if processes.main:
            made = not split_exists(config.data_dir)
            split = make_split(config, log)
        processes.barrier()
        if not processes.main:
            split = get_split(config.data_dir, [], random.Random(0))
    try:
        names = discover_classes(find_audio_files(config.data_dir))
        num_classes = len(names) if config.num_classes == "auto" else config.num_classes
        check_class_count(names, num_classes)
        if not config.folds:
            report_split(split, names)
        split = set_aside_unreadable(config, split, log)
    except ValueError:
        if made:                         # the data folder as it was: a corrected rerun splits afresh
            log.info(f"Removed the split files this run made in {config.data_dir}: " + ", ".join(remove_split(
                config.data_dir)))
        raise
    return split, ClassMap.from_names(names)


def make_split(config, log: logging.Logger) -> Dict[str, List[str]]:
    reuse = split_exists(config.data_dir)
    log.debug(f"Searching for audio files in {config.data_dir}")
    files = find_audio_files(config.data_dir)
    if not reuse:
        if config.filter_broken_audio:
            filter_broken_audio(config.data_dir, files)
            files = find_audio_files(config.data_dir)
        log.info(f"Found {len(files)} audio files for training.")
        if not files:
            raise ValueError(f"No .wav files below {config.data_dir}")
    rng = random.Random(config.seed)
    return get_split(config.data_dir, files if reuse else usable_files(files), rng)


def set_aside_unreadable(config, split: Dict[str, List[str]], log: logging.Logger) -> Dict[str, List[str]]:
    """Header scan of every split file (fast: no decoding)."""
    problems = scan_audio(os.path.join(config.data_dir, f) for files in split.values() for f in files)
    if not problems:
        return split
    listing = "\n".join(f"  {path}: {problem}" for path, problem in problems)
    if not config.filter_broken_audio:
        raise ValueError(f"{len(problems)} training file(s) cannot be used (fix or remove them, or pass "
                         f"--filter_broken_audio to set them aside):\n{listing}")
    bad = {os.path.relpath(path, config.data_dir) for path, _ in problems}
    log.warning(f"Setting aside {len(bad)} unreadable file(s) (--filter_broken_audio):\n{listing}")
    return {p: [f for f in files if f not in bad] for p, files in split.items()}


def training_channel(config) -> Optional[int]:
    """``--channels K`` (1-based) for training clips; ``mean`` (default) down-mixes."""
    value = str(config.channels)
    if value == "mean":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"--channels {value}: training takes 'mean' or a channel number (1, 2, ...)")


def background_files(config, split: Dict[str, List[str]], class_map: ClassMap) -> List[str]:
    """``--background_dir`` recordings and, with ``--background_from_noise_class``, the
    training split's noise clips."""
    files = list(noise_files_in(config.background_dir)) if config.background_dir else []
    if config.background_dir and not files:
        raise ValueError(f"--background_dir {config.background_dir}: no .wav files in this folder")
    if config.background_from_noise_class:
        noise = class_map.noise_index
        if noise is None:
            raise ValueError("--background_from_noise_class: the data has no class called noise")
        files += [os.path.join(config.data_dir, f) for f in split["train"]
                  if class_map.index(class_name(f)) == noise]
    return files


def spec_masks(config) -> Optional[SpecAugment]:
    """``--spec_augment``'s masks (on spectrograms, or on a raw-audio network's front end)."""
    if not config.spec_augment:
        return None
    return SpecAugment(config.time_masks, config.time_mask_width, config.freq_masks, config.freq_mask_width)


def build(config, options: FeatureOptions, frames: int, split: Dict[str, List[str]], class_map: ClassMap,
          seed: int, processes: Processes) -> TrainingData:
    noise = noise_files_in(config.noise_dir) if config.augmentation else []
    masks = spec_masks(config)
    background = background_files(config, split, class_map)
    channel = training_channel(config)
    datasets = {}
    for partition in PARTITIONS:
        train = partition == "train"
        augment = config.augmentation and train
        if isinstance(options, AudioOptions):                      # raw audio in (--backbone birdnet)
            datasets[partition] = AudioClipDataset(split[partition], config.data_dir, class_map, options, augment,
                                                   partition, seed, channel)
            continue
        datasets[partition] = Dataset(split[partition], config.data_dir, config.cache_dir, class_map, seq_len=frames,
                                      augmentation=augment, noise_files=noise if augment else [],
                                      dataset_name=partition, options=options, seed=seed,
                                      spec_augment=masks if train else None,
                                      background_files=background if train else (),
                                      background_snr=tuple(config.background_snr), channel=channel)
    train = datasets["train"]
    if config.weighted_sampling != "none" or config.rare_class_boost:
        counts = class_counts(train.labels, len(class_map))
        base = class_weights(counts, config.weighted_sampling, class_map.names)
        weights = sampling_weights(base, class_map.names, parse_boosts(config.rare_class_boost, class_map.names))
        sampler = BalancedSampler(train.labels, weights, seed, processes.rank, processes.world)
    else:
        sampler = ShuffleSampler(len(train), seed, processes.rank, processes.world)
    loaders = {"train": loader(config, train, sampler, drop_last=len(sampler) >= config.batch_size)}
    single = {}
    for partition in ("val", "test"):
        dataset = datasets[partition]
        loaders[partition] = loader(config, dataset, ShardSampler(len(dataset), processes.rank, processes.world))
        single[partition] = loader(config, dataset, ShardSampler(len(dataset))) if processes.distributed \
            else loaders[partition]
    data = TrainingData(split, class_map, options, frames, datasets, loaders, single)
    if config.bn_statistics == "recomputed":
        loaders["statistics"] = plain_loader(config, data, max(1, STATISTICS_CLIPS // len(class_map)),
                                           "BatchNorm statistics")
    return data


def loader(config, dataset, sampler, drop_last: bool = False) -> DataLoader:
    """Batches of ``(epoch, index)``-keyed items; workers stay alive between epochs and
    prefetch; pinned memory only for a GPU. The loader's own generator keeps it from
    drawing on the global random state (which the model's own randomness uses)."""
    workers = max(0, config.num_workers)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=EpochKeys(sampler), num_workers=workers,
                      drop_last=drop_last, pin_memory=not config.no_cuda and torch.cuda.is_available(),
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0))


STATISTICS_CLIPS = 1024     # training clips whose pass gives BatchNorm's statistics (--bn_statistics recomputed)


def plain_loader(config, data: TrainingData, per_class: int = 256, purpose: str = "centroids") -> DataLoader:
    """Up to ``per_class`` training clips per class (a fixed choice), without augmentation,
    in one process (every process the same): the clips whose features place the class
    centroids, and those that measure BatchNorm's statistics."""
    train = data.datasets["train"]
    by_class: Dict[int, List[str]] = {}
    for name, label in zip(train.file_names, train.labels):
        by_class.setdefault(label, []).append(name)
    rng = random.Random(0)
    chosen = sorted(f for files in by_class.values() for f in (files if len(files) <= per_class
                                                               else rng.sample(sorted(files), per_class)))
    if isinstance(data.options, AudioOptions):
        dataset = AudioClipDataset(chosen, config.data_dir, data.class_map, data.options,
                                   dataset_name=f"train ({purpose})", channel=training_channel(config))
    else:
        dataset = Dataset(chosen, config.data_dir, config.cache_dir, data.class_map, seq_len=data.frames,
                          dataset_name=f"train ({purpose})", options=data.options, channel=training_channel(config))
    return DataLoader(dataset, batch_size=config.batch_size, sampler=EpochKeys(ShardSampler(len(dataset))),
                      num_workers=0)        # one pass: starting worker processes would cost more than it saves


def all_files(data: TrainingData) -> List[str]:
    return [f for dataset in data.datasets.values() for f in dataset.file_names]


def check_bandwidth(data: TrainingData, log: logging.Logger) -> None:
    """One warning where a class's recorder shows in its spectrograms (``data.bandwidth``)."""
    options = data.options
    if isinstance(options, AudioOptions):
        return                            # raw audio in: no --fmax to advise (BirdNET's front end has its own band)
    working = next(iter(data.datasets.values())).working_dir or ""
    bands = class_bands(all_files(data), working, options.fmax)
    warning = band_warning(bands, options.fmin, options.fmax, options.sr)
    if warning:
        log.warning(warning)


def card_summary(data: TrainingData) -> Dict:
    """Clips per class and partition, tapes per class, sample rates (from file headers),
    and per class its native rates and clips whose band ends below fmax."""
    classes: Dict[str, Dict] = {name: {"train": 0, "val": 0, "test": 0, "tapes": 0} for name in data.class_map.names}
    tapes: Dict[str, set] = {name: set() for name in classes}
    rates: Counter = Counter()
    per_class: Dict[str, Counter] = {name: Counter() for name in classes}       # each header read once
    for partition, dataset in data.datasets.items():
        for relative in dataset.file_names:
            name = class_name(relative)
            if name not in classes:
                continue
            classes[name][partition] += 1
            tapes[name].add(tape_key(relative))
            try:
                rate = int(sf.info(os.path.join(dataset.working_dir or "", relative)).samplerate)
            except Exception:             # unreadable files were set aside before training
                rates["unreadable"] += 1
                continue
            rates[str(rate)] += 1
            per_class[name][rate] += 1
    for name in classes:
        classes[name]["tapes"] = len(tapes[name] - {None})
    summary = {"classes": classes, "sample_rates": dict(sorted(rates.items()))}
    options = data.options
    if not isinstance(options, AudioOptions):
        bands = bands_of(per_class, options.fmax)
        summary["bands"] = {"fmax": options.fmax, "sr": options.sr,
                            "classes": {name: band.to_dict() for name, band in bands.items()},
                            "warning": band_warning(bands, options.fmin, options.fmax, options.sr)}
    return summary
