"""Train an ANIMAL-SPOT classifier: ``python ANIMAL-SPOT/main.py --data_dir ... --model_dir ...``.

Every flag of the original, with its default, plus the backbone registry's flags and
this project's options (imbalance tools, schedulers, mixed precision, reproducibility).
Also runs under ``torchrun --nproc_per_node N`` (DistributedDataParallel).
"""

import dataclasses
import json
import logging
import os
import random
import sys
import time
import traceback
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

import copy

import torch
from torch.nn.parallel import DistributedDataParallel

from .training import crossval
from .training import factories
from .training import data as training_data
from .data.audio_io import AudioFileError
from .data.augment import FrontEndMasks
from .data.features import FeatureOptions, seq_frames
from .data.filenames import FileNameError
from .data.recording import AudioOptions
from .models import backbones, foundation
from .models.checkpoint_compat import CheckpointError, adapt_checkpoint, is_seed_checkpoint
from .models.model_file import ModelFileError, ModelSpec, classifier_options, load_model
from .models.tv_encoder import PretrainedWeightsError
from .training.trainer import Trainer, TrainingError, model_prefix
from .training.data import TrainingData
from .training.options import RunConfig, build_parser, parse  # noqa: F401  (their old place)
from .training.results import finish
from .utils import cli, runtime
from .utils.atomic import OutputError
from .utils.checkpoints import CheckpointFileError, CheckpointHandler
from .utils.logging import extra_log_file, to_file

KNOWN_ERRORS = (ValueError, FileNotFoundError, AudioFileError, ModelFileError, CheckpointFileError, CheckpointError,
                TrainingError, PretrainedWeightsError, OutputError, FileNameError)


# ---------------------------------------------------------------------------- options
def encoder_options(config, log: logging.Logger) -> dict:
    """encoderOpts for the chosen backbone from its declared flags; flags of other
    backbones that were given are named in a warning."""
    backbone = backbones.get(config.backbone)
    opts = dict(backbone.defaults)
    own = {option.flag for option in backbone.options}
    for option in backbones.cli_options():
        given = getattr(config, option.dest, None)
        if given is None:
            continue
        if option.flag in own:
            opts[option.key] = option.value(given)
        else:
            log.warning(f"{option.flag} means nothing for the {config.backbone} backbone and is ignored")
    if (config.pretrained or config.pretrained_weights) and not backbone.pretrained:
        log.warning(f"--pretrained/--pretrained_weights: no pretrained weights for {config.backbone}; ignored")
    if backbone.audio:                      # a foundation network trained here: its name, version, licence, weights
        opts.update(foundation.encoder_options(backbone.name), trainable=True)
    opts["backbone"] = backbone.name
    return opts


def feature_options(config):
    """The network's input: a spectrogram (``FeatureOptions``), or raw audio at the
    foundation network's rate (``AudioOptions``, ``--backbone birdnet``)."""
    if backbones.get(config.backbone).audio:
        info = foundation.describe(config.backbone)
        return AudioOptions(info.sample_rate, config.audio_window or config.sequence_len / 1000)
    values = {key: getattr(config, key) for key in ("sr", "n_fft", "hop_length", "n_freq_bins", "fmin", "fmax",
                                                    "freq_compression")}
    return FeatureOptions(**values, min_max_norm=config.min_max_norm)


def input_length(config, options) -> int:
    """The training segment in the input's own steps: spectrogram frames, or samples."""
    if isinstance(options, AudioOptions):
        return int(round(options.window * options.sr))
    return seq_frames(config.sequence_len, options.sr, options.hop_length)


MIN_AUDIO_WINDOW = 1.0      # seconds: BirdNET's stages and 3x3 head need this much (0.75 s fails)
# flags that act on spectrograms: refused, with their reason, for a raw-audio network
SPECTROGRAM_ONLY = {"background_dir": "overlays spectrograms",
                    "background_from_noise_class": "overlays spectrograms", "min_max_norm": "normalises spectrograms"}


def check_options(config) -> None:
    if not config.model_dir:
        raise ValueError("--model_dir is required (where ANIMAL-SPOT.pk is written)")
    backbone = backbones.get(config.backbone)                  # an unknown name fails before any work too
    if backbone.audio and config.backbone not in foundation.TRAINABLE:
        raise ValueError(f"--backbone {config.backbone} is a foundation encoder: its embeddings take few-shot heads "
                         "(embed.py --backbone ...; embed.py fit); main.py trains spectrogram networks and "
                         f"{', '.join(foundation.TRAINABLE)}")
    if backbone.audio:
        window = config.audio_window or config.sequence_len / 1000
        if window < MIN_AUDIO_WINDOW:
            raise ValueError(f"--backbone {config.backbone}: a window of {window:g} s is too short for its network "
                             f"(at least {MIN_AUDIO_WINDOW:g} s; its own window: --audio_window 3)")
        given = [f"--{flag} ({why})" for flag, why in SPECTROGRAM_ONLY.items() if getattr(config, flag, None)]
        if config.noise_dir and os.path.isdir(config.noise_dir) and config.augmentation:
            given.append("--noise_dir (mixed into spectrograms; --augmentation adds white noise to raw audio)")
        if given:
            raise ValueError(f"--backbone {config.backbone} takes raw audio, so these act on nothing: "
                             + ", ".join(given))
    training_data.training_channel(config)
    low, high = config.background_snr
    if low > high:
        raise ValueError(f"--background_snr {low} {high}: LOW is above HIGH")


# ------------------------------------------------------------------------ entry point
def main(argv: Optional[List[str]] = None) -> int:
    config = parse(argv)
    if config.list_backbones:
        print("\n".join(backbones.describe()))
        return 0
    processes = runtime.start_processes(not config.no_cuda)

    def body(log):
        try:
            run(config, log, processes)
        except KNOWN_ERRORS:
            raise
        except Exception as error:               # as the original: the traceback as a warning, then abort
            if cli.out_of_memory(error):
                raise                            # one message saying what helps (utils.cli)
            log.warning(traceback.format_exc())
            log.warning("Aborting...")
            return 1
    try:
        return cli.run(body, "ANIMAL-SPOT", config.log_dir if processes.main else None, "TRAIN.log", config.debug,
                       KNOWN_ERRORS, level=None if processes.main else logging.WARNING)
    finally:
        runtime.stop_processes(processes)


def check_writable(config) -> None:
    """Every output folder, before hours of training depend on it."""
    for flag in ("model_dir", "checkpoint_dir", "log_dir", "summary_dir", "cache_dir"):
        folder = getattr(config, flag)
        if not folder:
            continue
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, f".write_test.{os.getpid()}")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as error:
            raise OutputError(f"--{flag} {folder}: cannot write there ({error.strerror or error})") from None


def run(config, log: logging.Logger, processes: runtime.Processes) -> None:
    """The steps of a run: check, find the data, train (once, or once per fold)."""
    check_options(config)
    split, class_map = training_data.discover(config, processes, log)
    log.info(f"Model predict {len(class_map)} classes")
    if config.folds:
        cross_validate(config, split["all"], class_map, log, processes)
    else:
        train(config, split, class_map, log, processes)
    processes.barrier()


def cross_validate(config, files: List[str], class_map, log: logging.Logger, processes: runtime.Processes) -> None:
    """K trainings on the folds of ``crossval``; folds finished earlier are not redone."""
    if processes.main:
        check_writable(config)
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2 ** 31)
        crossval.plan(config, files, seed)
    processes.barrier()
    splits = crossval.plan(config, files, 0)
    tests = []
    for k, split in enumerate(splits, start=1):
        fold = crossval.fold_config(config, k)
        finished = os.path.join(fold.model_dir, "metrics.json")
        if os.path.isfile(finished):
            log.info(f"Fold {k} of {len(splits)}: finished earlier ({finished})")
            with open(finished, encoding="utf-8") as handle:
                tests.append(json.load(handle)["test"])
            continue
        log.info(f"Fold {k} of {len(splits)}")
        crossval.report(split, class_map.names, k)
        with extra_log_file(log, fold.log_dir if processes.main else None, "TRAIN.log"):
            tests.append(train(fold, split, class_map, log, processes))
    if processes.main:
        crossval.write_summary(config, tests, class_map)


def train(config, split, class_map, log: logging.Logger, processes: runtime.Processes) -> dict:
    """One training run on ``split``; returns the test figures (as in metrics.json)."""
    device = runtime.choose_device(not config.no_cuda, processes.local_rank)
    precision = runtime.choose_precision(device, config.amp, quiet=not processes.main)
    options = feature_options(config)
    frames = input_length(config, options)
    log.debug("dataOpts: " + json.dumps(options.data_opts(), indent=4))
    log.debug(f"Number of input time-steps (spectrogram frames, or samples of raw audio) : {frames}")
    if processes.main:
        check_writable(config)
    resume = find_checkpoint(config, model_prefix(len(class_map)), log)
    seed = run_seed(config, resume, processes)
    data = training_data.build(config, options, frames, split, class_map, seed, processes)
    if processes.main:
        training_data.check_bandwidth(data, log)

    encoder_opts = resumed_encoder(resume, encoder_options(config, log), log)
    spec = ModelSpec(encoder_opts, classifier_options(encoder_opts, len(class_map)), options.data_opts(),
                     class_map.to_dict())
    log.info("Setting up model")
    model, spec = initial_model(config, spec, resume, log)
    if isinstance(options, AudioOptions) and config.spec_augment:       # on the image BirdNET makes of the audio
        model.encoder.mask_front_end(FrontEndMasks(training_data.spec_masks(config), model))
    to_file(log, logging.DEBUG, f"Encoder: {model.encoder}")          # the module tree: TRAIN.log, not the console
    to_file(log, logging.DEBUG, f"Classifier: {model.classifier}")
    log.info(f"Init model on device '{device}'")
    log.info(f"Class Distribution: {class_map.to_dict()}")
    trainer = make_trainer(config, model, data, device, precision, processes, seed, resume, frames, log)
    start_epoch = 0
    if resume is not None:
        start_epoch = trainer.restore(adapt_checkpoint(resume[1], model, resume[0], trainer.optimizer))
        log.info(f"Resuming with epoch {start_epoch}")
    log.info(f"Start training model {model_prefix(len(class_map))}")
    started = time.time()
    test = trainer.fit(data.loaders, config.max_train_epochs, config.epochs_per_eval, start_epoch)
    summary = test.metrics.summary(class_map.names, intervals=True)
    if processes.main:
        finish(config, trainer, data, spec, test, seed, precision, processes, started, log)
    return summary


def find_checkpoint(config, prefix: str, log: logging.Logger):
    """``(path, checkpoint)`` to resume from, or None."""
    if not config.checkpoint_dir:
        log.warning("No --checkpoint_dir: no checkpoints are written and training cannot resume")
        return None
    if config.start_from_scratch:
        return None
    found = CheckpointHandler(config.checkpoint_dir, prefix, config.keep_checkpoints).load_latest()
    if found is None:
        log.info(f"No checkpoints found in {config.checkpoint_dir}")
        return None
    log.info(f"Restoring checkpoint {found[0]}")
    return found


def run_seed(config, resume, processes: runtime.Processes) -> int:
    """The run's base seed: the checkpoint's (a resumed run draws as the interrupted one
    would have), else ``--seed``, else a fresh one; the same in every process."""
    if resume is not None and "seed" in (resume[1].get("fork") or {}):
        return int(resume[1]["fork"]["seed"])
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2 ** 31)
    seed = processes.broadcast_object(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    return seed


def resumed_encoder(resume, encoder_opts: dict, log: logging.Logger) -> dict:
    """The seed fork's ConvNeXt checkpoints resume as the seed's network (no final norm)."""
    if resume is not None and is_seed_checkpoint(resume[1]["modelState"]):
        log.info(f"{resume[0]}: a checkpoint of the seed fork's ConvNeXt; resuming its network "
                 "(ConvNeXt Tiny features without the final LayerNorm)")
        return {"backbone": "convnext", "input_channels": 1, "variant": "tiny", "final_norm": False}
    return encoder_opts


def initial_model(config, spec: ModelSpec, resume, log: logging.Logger):
    """The network to train: weights from the checkpoint (restored later), a trained
    model file (``--transfer_from``), ImageNet, or fresh."""
    if config.transfer_from and resume is None:
        return transferred_model(config.transfer_from, spec, log)
    audio = backbones.get(spec.backbone).audio                  # a foundation network starts from its own weights
    pretrained = (config.pretrained or bool(config.pretrained_weights) or audio) and resume is None
    return spec.build(pretrained, config.pretrained_weights if resume is None else None), spec


def transferred_model(path: str, spec: ModelSpec, log: logging.Logger):
    """The encoder of ``path`` (its backbone and options win over the flags), and its head
    when its classes are ours."""
    source = load_model(path)
    head_only = head_on(source.spec, spec)
    if head_only:                       # a head fitted on the foundation encoder (embed.py fit): BirdNET's own weights
        model = spec.build(pretrained=True)
        log.info(f"--transfer_from {path}: a head fitted on {spec.backbone}'s embedding; the network starts from "
                 f"{spec.backbone}'s published weights")
    else:
        encoder_opts = dict(source.spec.encoder_opts)
        spec = dataclasses.replace(spec, encoder_opts=encoder_opts,
                                   classifier_opts=classifier_options(encoder_opts, spec.num_classes))
        model = spec.build()
        model.encoder.load_state_dict(source.model.encoder.state_dict())
    if source.class_map.same_classes(spec.class_map) and source.spec.classifier_opts == spec.classifier_opts:
        model.classifier.load_state_dict(source.model.classifier.state_dict())
        log.info(f"--transfer_from {path}: encoder and classifier head loaded (same classes)")
    else:
        log.info(f"--transfer_from {path}: encoder loaded; a new classifier head for the classes "
                 f"{', '.join(spec.class_map.names)} ({spec.class_map.describe_difference(source.class_map)})")
    if source.spec.data_opts != spec.data_opts:
        log.warning(f"--transfer_from {path}: it was trained with other data options {source.spec.data_opts}")
    return model, spec


def head_on(source: ModelSpec, spec: ModelSpec) -> bool:
    """Whether ``source`` is a head on the foundation encoder that ``spec`` trains (``embed.py
    fit`` on BirdNET's embedding, then ``main.py --backbone birdnet --transfer_from HEAD.pk``)."""
    return bool(spec.encoder_opts.get("trainable")) and not source.encoder_opts.get("trainable") and \
        source.backbone == spec.backbone


def make_trainer(config, model, data: TrainingData, device, precision, processes, seed, resume, frames,
                 log) -> Trainer:
    model.to(device)
    optimizer = factories.optimizer(config, model, processes)
    fork = (resume[1].get("fork") or {}) if resume else {}
    precision = runtime.Precision.from_name(fork["precision"]) if "precision" in fork else precision
    memory_format = fork.get("memoryFormat") or choose_format(config, model, precision, device, frames, data)
    model.to(memory_format=runtime.MEMORY_FORMATS[memory_format])
    network = runtime.maybe_compile(model, config.compile)
    if processes.distributed:
        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    return Trainer(model, data.class_map, device, factories.loss(config, data, log), optimizer,
                   factories.listeners(config, model, optimizer, data, processes),
                   factories.step(config, device, precision, memory_format), processes, seed, network)


def choose_format(config, model, precision, device, frames, data: TrainingData) -> str:
    forced = config.memory_format
    if forced == "auto" and config.seed is not None:
        forced = "contiguous"       # reproducible runs: no timing-dependent choice

    shape = (frames,) if isinstance(data.options, AudioOptions) else (frames, data.options.input_bins)
    example = torch.rand(max(2, config.batch_size), 1, *shape, generator=torch.Generator().manual_seed(0))
    probe = copy.deepcopy(model) if forced == "auto" else model
    return runtime.choose_memory_format(probe, example, precision, device, forced, training=True)


if __name__ == "__main__":
    sys.exit(main())
