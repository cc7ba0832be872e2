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
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.audio_io import scan_audio
from data.audiodataset import Dataset, EpochKeys, noise_files_in
from data.features import FeatureOptions
from data.filenames import class_name, discover_classes, filter_broken_audio, find_audio_files, usable_files
from data.samplers import BalancedSampler, ShardSampler, ShuffleSampler, class_counts, sampling_weights
from data.split import PARTITIONS, get_split, report_split, split_exists
from utils.classmap import ClassMap, check_class_count
from utils.imbalance import class_weights, parse_boosts
from utils.runtime import Processes

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


def discover(args, processes: Processes, log: logging.Logger) -> Tuple[Dict[str, List[str]], ClassMap]:
    """The split (made on the main process, read by the others) and the class map."""
    if not args.data_dir or not os.path.isdir(args.data_dir):
        raise ValueError(f"--data_dir {args.data_dir} is not a folder")
    if processes.main:
        split = make_split(args, log)
    processes.barrier()
    if not processes.main:
        split = get_split(args.data_dir, [], random.Random(0))
    names = discover_classes(find_audio_files(args.data_dir))
    num_classes = len(names) if args.num_classes == "auto" else args.num_classes
    check_class_count(names, num_classes)
    report_split(split, names)
    split = set_aside_unreadable(args, split, log)
    return split, ClassMap.from_names(names)


def make_split(args, log: logging.Logger) -> Dict[str, List[str]]:
    reuse = split_exists(args.data_dir)
    log.debug(f"Searching for audio files in {args.data_dir}")
    files = find_audio_files(args.data_dir)
    if not reuse:
        if args.filter_broken_audio:
            filter_broken_audio(args.data_dir, files)
            files = find_audio_files(args.data_dir)
        log.info(f"Found {len(files)} audio files for training.")
        if not files:
            raise ValueError(f"No .wav files below {args.data_dir}")
    rng = random.Random(args.seed)
    return get_split(args.data_dir, files if reuse else usable_files(files), rng)


def set_aside_unreadable(args, split: Dict[str, List[str]], log: logging.Logger) -> Dict[str, List[str]]:
    """Header scan of every split file (fast: no decoding)."""
    problems = scan_audio(os.path.join(args.data_dir, f) for p in PARTITIONS for f in split.get(p, []))
    if not problems:
        return split
    listing = "\n".join(f"  {path}: {problem}" for path, problem in problems)
    if not args.filter_broken_audio:
        raise ValueError(f"{len(problems)} training file(s) cannot be used (fix or remove them, or pass "
                         f"--filter_broken_audio to set them aside):\n{listing}")
    bad = {os.path.relpath(path, args.data_dir) for path, _ in problems}
    log.warning(f"Setting aside {len(bad)} unreadable file(s) (--filter_broken_audio):\n{listing}")
    return {p: [f for f in files if f not in bad] for p, files in split.items()}


def build(args, options: FeatureOptions, frames: int, split: Dict[str, List[str]], class_map: ClassMap,
          seed: int, processes: Processes) -> TrainingData:
    noise = noise_files_in(args.noise_dir) if args.augmentation else []
    datasets = {}
    for partition in PARTITIONS:
        augment = args.augmentation and partition == "train"
        datasets[partition] = Dataset(split[partition], args.data_dir, args.cache_dir, class_map, seq_len=frames,
                                      augmentation=augment, noise_files=noise if augment else [],
                                      dataset_name=partition, options=options, seed=seed)
    train = datasets["train"]
    if args.weighted_sampling != "none" or args.rare_class_boost:
        counts = class_counts(train.labels, len(class_map))
        base = class_weights(counts, args.weighted_sampling, class_map.names)
        weights = sampling_weights(base, class_map.names, parse_boosts(args.rare_class_boost, class_map.names))
        sampler = BalancedSampler(train.labels, weights, seed, processes.rank, processes.world)
    else:
        sampler = ShuffleSampler(len(train), seed, processes.rank, processes.world)
    loaders = {"train": loader(args, train, sampler, drop_last=len(sampler) >= args.batch_size)}
    single = {}
    for partition in ("val", "test"):
        dataset = datasets[partition]
        loaders[partition] = loader(args, dataset, ShardSampler(len(dataset), processes.rank, processes.world))
        single[partition] = loader(args, dataset, ShardSampler(len(dataset))) if processes.distributed \
            else loaders[partition]
    return TrainingData(split, class_map, options, frames, datasets, loaders, single)


def loader(args, dataset, sampler, drop_last: bool = False) -> DataLoader:
    """Batches of ``(epoch, index)``-keyed items; workers stay alive between epochs and
    prefetch; pinned memory only for a GPU. The loader's own generator keeps it from
    drawing on the global random state (which the model's own randomness uses)."""
    workers = max(0, args.num_workers)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=EpochKeys(sampler), num_workers=workers,
                      drop_last=drop_last, pin_memory=args.cuda and torch.cuda.is_available(),
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def collect_logits(trainer, loader) -> Tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a whole split (eval mode, the run's precision)."""
    model = trainer.model.eval()
    logits, labels = [], []
    for inputs, label in loader:
        inputs = inputs.to(trainer.device).contiguous(memory_format=trainer.step.memory_format)
        with trainer.step.precision.autocast(trainer.device):
            out = model(inputs)
        logits.append(out.float().cpu())
        labels.append(label["call"])
    if not logits:
        return np.zeros((0, trainer.num_classes)), np.zeros(0, dtype=int)
    return torch.cat(logits).numpy().astype(np.float64), torch.cat(labels).numpy()

