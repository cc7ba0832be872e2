"""Train an ANIMAL-SPOT classifier: ``python ANIMAL-SPOT/main.py --data_dir ... --model_dir ...``.

Every flag of the original, with its default, plus ``--backbone``, ``--pretrained``,
``--pretrained_weights`` and ``--seed``.
"""

import argparse
import json
import logging
import math
import os
import random
import sys
from typing import List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader

from data.audiodataset import Dataset, noise_files_in
from data.filenames import (class_index_map, discover_classes, filter_broken_audio,
                            find_audio_files, usable_files)
from data.split import PARTITIONS, get_split, report_split, split_exists
from data.transforms import FREQ_COMPRESSIONS, FeatureOptions, seq_frames
from models import backbones
from models.classifier import DefaultClassifierOpts
from models.model_file import build_model, save_jit_model, save_model
from trainer import Trainer, TrainingAborted
from utils.logging import close_logger, setup_logger

DEFAULT_DATA_OPTS = FeatureOptions().data_opts()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train an ANIMAL-SPOT call detector / classifier.")
    a = p.add_argument
    a("-d", "--debug", action="store_true", help="log at DEBUG level")
    a("--data_dir", type=str, default=None, help="root folder of the labelled wav clips")
    a("--cache_dir", type=str, default=None, help="cache spectrograms in this folder")
    a("--model_dir", type=str, default=None, help="where ANIMAL-SPOT.pk is written")
    a("--checkpoint_dir", type=str, default=None, help="checkpoint folder (resume from it)")
    a("--log_dir", type=str, default=None, help="write TRAIN.log here")
    a("--summary_dir", type=str, default=None, help="TensorBoard root folder")
    a("--noise_dir", type=str, default=None, help="folder of noise wav files for noise augmentation")
    a("--start_from_scratch", dest="start_scratch", action="store_true",
      help="do not resume from the latest checkpoint")
    a("--max_train_epochs", type=int, default=500)
    a("--jit_save", action="store_true", help="save the model as TorchScript")
    a("--epochs_per_eval", type=int, default=2, help="validate every N epochs")
    a("--batch_size", type=int, default=1, help="batch size (also multiplies the learning rate)")
    a("--num_workers", type=int, default=4, help="data loader workers")
    a("--no_cuda", dest="cuda", action="store_false", help="do not use a GPU")
    a("--lr", "--learning_rate", type=float, default=1e-5,
      help="base learning rate; the effective rate is lr x batch_size")
    a("--beta1", type=float, default=0.5, help="Adam beta1")
    a("--lr_patience_epochs", type=int, default=8)
    a("--lr_decay_factor", type=float, default=0.5)
    a("--early_stopping_patience_epochs", type=int, default=20, metavar="N")
    a("--filter_broken_audio", action="store_true", help="move near-silent files to bkp/ before splitting")
    a("--sequence_len", type=int, default=1280, help="training segment length in ms")
    a("--freq_compression", type=str, default="linear", choices=FREQ_COMPRESSIONS)
    a("--sr", type=int, default=44100)
    a("--fmin", type=int, default=500)
    a("--fmax", type=int, default=10000)
    a("--n_freq_bins", type=int, default=256)
    a("--n_fft", type=int, default=4096)
    a("--hop_length", type=int, default=441)
    a("--augmentation", action="store_true", help="augment the training split")
    a("--resnet", dest="resnet_size", type=int, default=None, choices=(18, 34, 50, 101, 152),
      help="ResNet size (default 18)")
    a("--conv_kernel_size", type=int, nargs="*", default=None, help="first convolution's kernel (default 7)")
    a("--num_classes", type=int, default=2)
    a("--min_max_norm", action="store_true", help="min-max normalisation instead of dB normalisation")
    a("--max_pool", type=int, default=None, choices=(0, 1, 2), help="ResNet stem pooling (default 1)")
    # fork additions
    a("--backbone", type=str, default="resnet", choices=sorted(backbones.REGISTRY),
      help="encoder: " + "; ".join(f"{b.name} = {b.description}" for b in backbones.REGISTRY.values()))
    a("--pretrained", action="store_true", help="start from ImageNet weights (ConvNeXt)")
    a("--pretrained_weights", type=str, default=None,
      help="local torchvision state dict to use as ImageNet weights (offline machines)")
    a("--seed", type=int, default=None, help="seed Python, NumPy, torch and the loader workers")
    return p


def seed_everything(seed: Optional[int]) -> Optional[torch.Generator]:
    if seed is None:
        return None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def encoder_options(args, log: logging.Logger) -> dict:
    """encoderOpts for the chosen backbone; warn about flags that mean nothing for it."""
    backbone = backbones.get(args.backbone)
    opts = dict(backbone.defaults)
    given = {"conv_kernel_size": args.conv_kernel_size, "max_pool": args.max_pool, "resnet_size": args.resnet_size}
    if args.conv_kernel_size is not None:
        if len(args.conv_kernel_size) == 0:
            raise ValueError("--conv_kernel_size needs a value")
        if len(args.conv_kernel_size) > 1:
            log.warning(f"--conv_kernel_size: only the first value ({args.conv_kernel_size[0]}) is used")
        given["conv_kernel_size"] = args.conv_kernel_size[0]
    for name, value in given.items():
        if value is None:
            continue
        if name in backbone.cli_options:
            opts[name] = value
        else:
            log.warning(f"--{'resnet' if name == 'resnet_size' else name} means nothing for the "
                        f"{args.backbone} backbone and is ignored")
    if (args.pretrained or args.pretrained_weights) and not backbone.pretrained:
        log.warning(f"--pretrained/--pretrained_weights: no pretrained weights for {args.backbone}; ignored")
    opts["backbone"] = args.backbone
    return opts


def discover(args, log: logging.Logger):
    """The audio files (relative paths) and the sorted class names."""
    if not args.data_dir or not os.path.isdir(args.data_dir):
        raise ValueError(f"--data_dir {args.data_dir} is not a folder")
    reuse = split_exists(args.data_dir)
    log.debug(f"Searching for audio files in {args.data_dir}")
    files = find_audio_files(args.data_dir)
    if not reuse:
        if args.filter_broken_audio:
            filter_broken_audio(args.data_dir, files)
            files = find_audio_files(args.data_dir)
        log.info(f"Found {len(files)} audio files for training.")
        if not files:
            log.error(f"No .wav files below {args.data_dir}")
            raise SystemExit(1)
    return files, discover_classes(files), reuse


def make_loaders(args, split, classes, options: FeatureOptions, frames: int, generator):
    noise = noise_files_in(args.noise_dir) if args.augmentation else []
    loaders = {}
    for partition in PARTITIONS:
        augment = args.augmentation and partition == "train"
        dataset = Dataset(
            split[partition], args.data_dir, args.cache_dir, classes, sr=options.sr, n_fft=options.n_fft,
            hop_length=options.hop_length, freq_compression=options.freq_compression,
            n_freq_bins=options.n_freq_bins, f_min=options.fmin, f_max=options.fmax, seq_len=frames,
            augmentation=augment, noise_files=noise if augment else [], min_max_normalize=args.min_max_norm,
            dataset_name=partition)
        training = partition == "train"
        loaders[partition] = DataLoader(
            dataset, batch_size=args.batch_size, shuffle=training, num_workers=args.num_workers,
            drop_last=training and len(dataset) >= args.batch_size, pin_memory=args.cuda,
            generator=generator, persistent_workers=False)
    return loaders


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logger("ANIMAL-SPOT", args.log_dir, "TRAIN.log", args.debug)
    try:
        run(args, log)
    except TrainingAborted:
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        log.error(str(error))
        return 1
    finally:
        close_logger(log)
    return 0


def run(args, log: logging.Logger) -> None:
    args.cuda = args.cuda and torch.cuda.is_available()
    device = torch.device("cuda" if args.cuda else "cpu")
    generator = seed_everything(args.seed)
    if not args.model_dir:
        raise ValueError("--model_dir is required (where ANIMAL-SPOT.pk is written)")

    encoder_opts = encoder_options(args, log)
    data_opts = dict(DEFAULT_DATA_OPTS)
    for key in data_opts:
        if getattr(args, key, None) is not None:
            data_opts[key] = getattr(args, key)
    options = FeatureOptions.from_data_opts(data_opts, args.min_max_norm)
    classifier_opts = dict(DefaultClassifierOpts, num_classes=args.num_classes,
                           input_channels=backbones.output_channels(encoder_opts))
    lr = args.lr * args.batch_size
    patience_lr = max(1, math.ceil(args.lr_patience_epochs / args.epochs_per_eval))
    frames = seq_frames(args.sequence_len, options.sr, options.hop_length)
    log.debug("dataOpts: " + json.dumps(data_opts, indent=4))
    log.debug(f"Number of spectrogram time-steps (input size = time-steps x frequency-bins) : {frames}")

    files, class_names, reuse = discover(args, log)
    classes = class_index_map(class_names, args.num_classes)
    log.info(f"Model predict {args.num_classes} classes")
    rng = random.Random(args.seed)
    split = get_split(args.data_dir, usable_files(files) if not reuse else files, rng)
    report_split(split, class_names)

    log.info("Setting up model")
    model = build_model(encoder_opts, classifier_opts, pretrained=args.pretrained,
                        weights_path=args.pretrained_weights)
    log.debug(f"Encoder: {model.encoder}")
    log.debug(f"Classifier: {model.classifier}")
    loaders = make_loaders(args, split, classes, options, frames, generator)

    log.info(f"Init model on device '{device}'")
    log.info(f"Class Distribution: {classes}")
    trainer = Trainer(model, classes, device, args.checkpoint_dir, args.summary_dir, args.start_scratch)
    optimizer = optim.Adam(model.parameters(), lr=lr, betas=(args.beta1, 0.999))
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", patience=patience_lr, factor=args.lr_decay_factor,
        threshold=1e-3, threshold_mode="abs")
    model = trainer.fit(loaders["train"], loaders["val"], loaders["test"], nn.CrossEntropyLoss(),
                        optimizer, scheduler, args.max_train_epochs, args.epochs_per_eval,
                        args.early_stopping_patience_epochs)

    train_opts = {"sequence_len": args.sequence_len, "seq_frames": frames, "min_max_norm": args.min_max_norm,
                  "augmentation": args.augmentation}
    os.makedirs(args.model_dir, exist_ok=True)
    path = os.path.join(args.model_dir, "ANIMAL-SPOT.pk")
    if args.jit_save:
        example = torch.rand(1, 1, frames, options.input_bins)
        save_jit_model(path, model, example, encoder_opts, classifier_opts, data_opts, classes, train_opts,
                       jit_transforms(options, classes, args.sequence_len))
        log.debug(f"Model successfully saved via torch jit: {path}")
    else:
        save_model(path, model, encoder_opts, classifier_opts, data_opts, classes, train_opts)
        log.debug(f"Model successfully saved via torch save: {path}")


def jit_transforms(options: FeatureOptions, classes: dict, sequence_len: int) -> dict:
    """The descriptive ``transforms`` extra file of a TorchScript model."""
    norm = ("{min_max : True, min_db : None, ref_db : None}" if options.min_max_norm else
            f"{{min_max : False, min_db : {options.min_level_db}, ref_db : {options.ref_level_db}}}")
    return {
        "load_audio": f"{{sr: {options.sr}, mono : True}}",
        "pre_emph": f"{{pre_empf_factor : {options.preemphases}}}",
        "spectrogram": f"{{fft : {options.n_fft}, hop : {options.hop_length}, center : False}}",
        "freq_compression": f"{{type : {options.freq_compression}, bins : {options.n_freq_bins}, "
                            f"fmin : {options.fmin}, fmax : {options.fmax}}}",
        "amplitude_to_decibel": f"{{min_db : {options.min_level_db}}}",
        "normalize": norm,
        "class_info": f"{{num_class : {len(classes)}, name_class : {classes}}}",
        "seg_size": f"{{size_ms : {sequence_len}}}",
    }


if __name__ == "__main__":
    sys.exit(main())
