"""Train an ANIMAL-SPOT classifier: ``python ANIMAL-SPOT/main.py --data_dir ... --model_dir ...``.

Every flag of the original, with its default, plus the backbone registry's flags and
this project's options (imbalance tools, schedulers, mixed precision, reproducibility).
Also runs under ``torchrun --nproc_per_node N`` (DistributedDataParallel).
"""

import argparse
import json
import logging
import os
import random
import sys
import time
import traceback
from typing import List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch

import crossval
import factories
import training_data
from data.audio_io import AudioFileError
from data.features import FREQ_COMPRESSIONS, FeatureOptions, seq_frames
from data.filenames import FileNameError
from data.split import split_hash
from evaluation.calibration import UNKNOWN_SCORES, calibrate, detection_figures, fit_unknown, softmax, unknown_report
from evaluation.metrics import METRICS, pct
from models import backbones, model_card
from models.checkpoint_compat import CheckpointError, adapt_checkpoint, is_seed_checkpoint
from models.losses import SCHEMES, SEED_SPELLINGS
from models.model_file import (ModelFileError, ModelSpec, classifier_options, load_model, provenance,
                               save_jit_model, save_model)
from models.tv_encoder import PretrainedWeightsError
from trainer import Trainer, TrainingError, model_prefix
from training_data import TrainingData
from utils import run_config, runtime
from utils.atomic import OutputError, atomic_write_text
from utils.checkpoints import CheckpointFileError, CheckpointHandler
from utils.logging import close_logger, extra_log_file, setup_logger

SCHEDULERS = ("plateau", "onecycle", "cosine")
KNOWN_ERRORS = (ValueError, FileNotFoundError, AudioFileError, ModelFileError, CheckpointFileError, CheckpointError,
                TrainingError, PretrainedWeightsError, OutputError, FileNameError)


def _range_type(kind, low, high=None, high_open=False, what="value"):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < low or (high is not None and (value >= high if high_open else value > high)):
            bound = f"[{low}, {high})" if high_open else (f">= {low}" if high is None else f"[{low}, {high}]")
            raise argparse.ArgumentTypeError(f"{what} must be in {bound}, not {value}")
        return value
    return parse


def _num_classes(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


def _weighting(text):
    if text not in SCHEMES and text not in SEED_SPELLINGS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(SCHEMES + tuple(SEED_SPELLINGS))}")
    return SEED_SPELLINGS.get(text, text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train an ANIMAL-SPOT call detector / classifier.")
    a = p.add_argument
    a("-d", "--debug", action="store_true", help="log at DEBUG level")
    a("--data_dir", type=str, default=None, help="root folder of the labelled wav clips (required)")
    a("--cache_dir", type=str, default=None, help="cache spectrograms in this folder (default: no cache)")
    a("--model_dir", type=str, default=None, help="where ANIMAL-SPOT.pk and metrics.json are written (required)")
    a("--checkpoint_dir", type=str, default=None, help="checkpoint folder; training resumes from it")
    a("--log_dir", type=str, default=None, help="write TRAIN.log here")
    a("--summary_dir", type=str, default=None, help="TensorBoard root folder (default: ./runs)")
    a("--noise_dir", type=str, default=None, help="folder of noise wav files for noise augmentation")
    a("--start_from_scratch", action="store_true", help="do not resume from the latest checkpoint")
    a("--max_train_epochs", type=int, default=500, help="number of epochs (default 500)")
    a("--jit_save", action="store_true", help="save the model as TorchScript")
    a("--epochs_per_eval", type=_range_type(int, 1, what="--epochs_per_eval"), default=2,
      help="validate every N epochs (default 2)")
    a("--batch_size", type=_range_type(int, 1, what="--batch_size"), default=1,
      help="batch size per process (default 1); also multiplies the learning rate")
    a("--num_workers", type=int, default=4, help="data loader worker processes (default 4)")
    a("--no_cuda", action="store_true", help="do not use a GPU (or Apple's MPS)")
    a("--lr", "--learning_rate", type=float, default=1e-5,
      help="base learning rate (default 1e-5); the effective rate is lr x batch_size (x processes)")
    a("--beta1", type=float, default=0.5, help="Adam beta1 (default 0.5; beta2 is 0.999)")
    a("--lr_patience_epochs", type=int, default=8,
      help="plateau scheduler: epochs without validation improvement before the LR decays (default 8)")
    a("--lr_decay_factor", type=float, default=0.5, help="plateau scheduler: LR multiplier on a plateau (default 0.5)")
    a("--early_stopping_patience_epochs", type=int, default=20, metavar="N",
      help="stop after N epochs without validation improvement (default 20)")
    a("--filter_broken_audio", action="store_true",
      help="before the first split, move near-silent and unreadable files to bkp/ folders")
    a("--sequence_len", type=int, default=1280, help="training segment length in ms (default 1280)")
    a("--freq_compression", type=str, default="linear", choices=FREQ_COMPRESSIONS,
      help="frequency axis: linear, mel or mfcc (default linear)")
    a("--sr", type=int, default=44100, help="sampling rate in Hz; every file is resampled to it (default 44100)")
    a("--fmin", type=int, default=500, help="lowest frequency in Hz (default 500)")
    a("--fmax", type=int, default=10000, help="highest frequency in Hz (default 10000)")
    a("--n_freq_bins", type=int, default=256, help="frequency bins after compression (default 256)")
    a("--n_fft", type=int, default=4096, help="FFT size = window length in samples (default 4096)")
    a("--hop_length", type=int, default=441, help="STFT hop in samples (default 441)")
    a("--augmentation", action="store_true", help="augment the training split")
    a("--num_classes", type=_num_classes, default=2,
      help="number of classes (default 2 = target/noise detection); 'auto' counts them in --data_dir")
    a("--min_max_norm", action="store_true", help="min-max normalisation instead of dB normalisation")
    add_fork_options(p)
    return p


def add_fork_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backbones (each backbone's own flags follow)")
    g.add_argument("--backbone", type=str, default="resnet",
                   help="encoder: a registered name (--list_backbones) or timm:<model> (default resnet)")
    g.add_argument("--list_backbones", action="store_true", help="list the backbones and exit")
    for option in backbones.cli_options():
        option.add_to(g)
    g.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (torchvision / timm)")
    g.add_argument("--pretrained_weights", type=str, default=None,
                   help="local ImageNet weights (torchvision state dict or timm checkpoint), for offline machines")
    g.add_argument("--transfer_from", type=str, default=None,
                   help="start from a trained ANIMAL-SPOT.pk (its encoder; its head too if the classes match)")
    r = p.add_argument_group("rare classes (all off by default)")
    r.add_argument("--class_weights", type=_weighting, default="none",
                   help="cross-entropy class weights from the training counts: none, inverse, sqrt_inverse, "
                        "effective_num")
    r.add_argument("--weighted_sampling", type=_weighting, default="none",
                   help="class-balanced sampling: none, inverse, sqrt_inverse, effective_num (epoch length unchanged)")
    r.add_argument("--rare_class_boost", type=str, default=None, help="sampling boosts CLASS=FACTOR,... (seed fork)")
    r.add_argument("--loss", type=str, default="ce", choices=("ce", "focal"), help="cross-entropy or focal loss")
    r.add_argument("--focal_gamma", type=_range_type(float, 0.0, what="--focal_gamma"), default=2.0,
                   help="focal loss gamma >= 0 (default 2)")
    r.add_argument("--label_smoothing", type=_range_type(float, 0.0, 1.0, True, "--label_smoothing"), default=0.0,
                   help="label smoothing in [0, 1) (default 0)")
    r.add_argument("--grad_clip", type=_range_type(float, 0.0, what="--grad_clip"), default=None,
                   help="clip the gradient norm to this value")
    r.add_argument("--scheduler", type=str, default="plateau", choices=SCHEDULERS,
                   help="plateau (the original), onecycle (per batch) or cosine (per epoch); peak = effective LR")
    r.add_argument("--weight_decay", type=_range_type(float, 0.0, what="--weight_decay"), default=0.0,
                   help="Adam weight decay (default 0)")
    r.add_argument("--target_precision", type=_range_type(float, 0.0, 1.0, what="--target_precision"), default=None,
                   help="choose per-class thresholds reaching this validation precision (default: best F1)")
    s = p.add_argument_group("speed and reproducibility")
    s.add_argument("--seed", type=int, default=None, help="seed the split, data order, augmentation and weights")
    s.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 / float16) where the device has it")
    s.add_argument("--compile", action="store_true", help="torch.compile the network (falls back when it cannot)")
    s.add_argument("--memory_format", type=str, default="auto", choices=("auto", "contiguous", "channels_last"),
                   help="input/weight memory format (auto: timed on this machine; contiguous with --seed)")
    s.add_argument("--keep_checkpoints", type=_range_type(int, 1, what="--keep_checkpoints"), default=5,
                   help="checkpoints kept on disk (default 5)")
    s.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_robustness_options(p)


def add_robustness_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (all off by default; the original's --augmentation unchanged)")
    g.add_argument("--spec_augment", action="store_true", help="time and frequency masks on the network input")
    g.add_argument("--time_masks", type=_range_type(int, 0, what="--time_masks"), default=2,
                   help="time masks per item (default 2)")
    g.add_argument("--time_mask_width", type=_range_type(int, 0, what="--time_mask_width"), default=10,
                   help="widest time mask in frames (default 10)")
    g.add_argument("--freq_masks", type=_range_type(int, 0, what="--freq_masks"), default=2,
                   help="frequency masks per item (default 2)")
    g.add_argument("--freq_mask_width", type=_range_type(int, 0, what="--freq_mask_width"), default=8,
                   help="widest frequency mask in bins (default 8)")
    g.add_argument("--mixup", type=_range_type(float, 0.0, what="--mixup"), default=None, metavar="ALPHA",
                   help="mix pairs of training inputs and their labels, weight ~ Beta(ALPHA, ALPHA) (e.g. 0.2)")
    g.add_argument("--background_dir", type=str, default=None,
                   help="overlay a random stretch of these recordings (*.wav) on every training clip")
    g.add_argument("--background_from_noise_class", action="store_true",
                   help="overlay the training split's noise clips as backgrounds")
    g.add_argument("--background_snr", type=float, nargs=2, default=(0.0, 20.0), metavar=("LOW", "HIGH"),
                   help="signal-to-background ratio in dB, drawn uniformly (default 0 20)")
    g.add_argument("--channels", type=str, default="mean",
                   help="clips with several channels: mean (down-mix, default) or K (use channel K, 1-based)")
    m = p.add_argument_group("model selection, cross-validation and the unknown answer")
    m.add_argument("--monitor", type=str, default="accuracy", choices=METRICS.monitorable() + ["loss"],
                   help="validation figure for the best weights, the plateau scheduler and early stopping "
                        "(default accuracy, as the original)")
    m.add_argument("--bn_statistics", type=str, default="recomputed", choices=("recomputed", "running"),
                   help="BatchNorm statistics for validation, test and the model file: recomputed on up to "
                        "1024 training clips with the current weights before each validation (default), or the "
                        "running averages of the training steps (the original; they trail the weights)")
    m.add_argument("--folds", type=_range_type(int, 2, what="--folds"), default=None, metavar="K",
                   help="cross-validation: K runs whose test partitions are disjoint groups of tapes")
    m.add_argument("--unknown_false_rejection", type=_range_type(float, 0.0, 1.0, True, "--unknown_false_rejection"),
                   default=0.05, help="share of known validation clips the unknown threshold rejects (default 0.05)")
    m.add_argument("--unknown_score", type=str, default=UNKNOWN_SCORES[0], choices=UNKNOWN_SCORES,
                   help=f"out-of-distribution score fitted for predict.py --unknown (default {UNKNOWN_SCORES[0]})")


RunConfig = run_config.config_class(build_parser())


def parse(argv: Optional[List[str]] = None) -> "RunConfig":
    """The command line as the run's frozen configuration."""
    return run_config.parse(build_parser(), RunConfig, argv)


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
    opts["backbone"] = backbone.name
    return opts


def feature_options(config) -> FeatureOptions:
    values = {key: getattr(config, key) for key in ("sr", "n_fft", "hop_length", "n_freq_bins", "fmin", "fmax",
                                                    "freq_compression")}
    return FeatureOptions(**values, min_max_norm=config.min_max_norm)


def train_options(config, processes: runtime.Processes, seed: int, precision: runtime.Precision) -> dict:
    """trainOpts of the model file and ``options`` of metrics.json: every option by its
    flag name, the seed actually used, and what follows from the options."""
    options = config.to_dict()
    options.update(seed=seed, seq_frames=seq_frames(config.sequence_len, config.sr, config.hop_length),
                   processes=processes.world, lr_effective=factories.effective_lr(config, processes),
                   precision=precision.name)
    return options


def check_options(config) -> None:
    if not config.model_dir:
        raise ValueError("--model_dir is required (where ANIMAL-SPOT.pk is written)")
    backbones.get(config.backbone)            # an unknown name fails before any work
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
    try:
        log = setup_logger("ANIMAL-SPOT", config.log_dir if processes.main else None, "TRAIN.log", config.debug,
                           level=None if processes.main else logging.WARNING)
    except OutputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        runtime.stop_processes(processes)
        return 1
    try:
        run(config, log, processes)
        return 0
    except KNOWN_ERRORS as error:
        log.error(error_message(error))
        return 1
    except KeyboardInterrupt:
        log.warning("Interrupted. Aborting...")
        return 1
    except Exception:
        log.warning(traceback.format_exc())
        log.warning("Aborting...")
        return 1
    finally:
        close_logger(log)
        runtime.stop_processes(processes)


def error_message(error: Exception) -> str:
    """The error's own message; for one raised in a loader worker, without the worker's
    traceback that the loader wraps around it."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return text


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
    frames = seq_frames(config.sequence_len, options.sr, options.hop_length)
    log.debug("dataOpts: " + json.dumps(options.data_opts(), indent=4))
    log.debug(f"Number of spectrogram time-steps (input size = time-steps x frequency-bins) : {frames}")
    if processes.main:
        check_writable(config)
    resume = find_checkpoint(config, model_prefix(len(class_map)), log)
    seed = run_seed(config, resume, processes)
    data = training_data.build(config, options, frames, split, class_map, seed, processes)

    encoder_opts = resumed_encoder(resume, encoder_options(config, log), log)
    spec = ModelSpec(encoder_opts, classifier_options(encoder_opts, len(class_map)), options.data_opts(),
                     class_map.to_dict())
    log.info("Setting up model")
    model = initial_model(config, spec, resume, log)
    log.debug(f"Encoder: {model.encoder}")
    log.debug(f"Classifier: {model.classifier}")
    log.info(f"Init model on device '{device}'")
    log.info(f"Class Distribution: {class_map.to_dict()}")
    trainer = make_trainer(config, model, data, device, precision, processes, seed, resume, frames, log)
    start_epoch = 0
    if resume is not None:
        start_epoch = trainer.restore(adapt_checkpoint(resume[1], model, resume[0]))
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
    pretrained = (config.pretrained or bool(config.pretrained_weights)) and resume is None
    return spec.build(pretrained, config.pretrained_weights if resume is None else None)


def transferred_model(path: str, spec: ModelSpec, log: logging.Logger):
    """The encoder of ``path`` (its backbone and options win over the flags), and its head
    when its classes are ours."""
    source = load_model(path)
    spec.encoder_opts = dict(source.spec.encoder_opts)
    spec.classifier_opts = classifier_options(spec.encoder_opts, spec.num_classes)
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
    return model


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
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    return Trainer(model, data.class_map, device, factories.loss(config, data, log), optimizer,
                   factories.listeners(config, model, optimizer, data, processes),
                   factories.step(config, device, precision, memory_format), processes, seed, network)


def choose_format(config, model, precision, device, frames, data: TrainingData) -> str:
    forced = config.memory_format
    if forced == "auto" and config.seed is not None:
        forced = "contiguous"       # reproducible runs: no timing-dependent choice
    import copy

    example = torch.rand(max(2, config.batch_size), 1, frames, data.options.input_bins,
                         generator=torch.Generator().manual_seed(0))
    probe = copy.deepcopy(model) if forced == "auto" else model
    return runtime.choose_memory_format(probe, example, precision, device, forced, training=True)


# ----------------------------------------------------------------------- the results
def finish(config, trainer: Trainer, data: TrainingData, spec: ModelSpec, test, seed: int, precision,
           processes, started: float, log) -> None:
    """Calibration and the unknown score on the best weights' validation logits, then the
    model file, metrics.json and the model card (main process)."""
    class_map = data.class_map
    best = trainer.best_weights()
    if best is not None and best.logits is not None:
        val_logits, val_labels, val_features = best.logits, best.labels, best.features
    else:                                   # no validation improved on the start, or an older checkpoint
        val_logits, val_labels, val_features = trainer.evaluate(data.single_loaders["val"])
    calibration = calibrate(val_logits, val_labels, class_map.names, class_map.noise_index, config.target_precision)
    calibration["test"] = detection_figures(softmax(test.logits, calibration["temperature"]), test.labels,
                                            class_map.names, calibration["thresholds"])
    log.info(f"Calibration on validation: temperature {calibration['temperature']:.3f}, expected calibration "
             f"error {calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}; thresholds "
             + ", ".join(f"{k} {v:.3f}" for k, v in calibration["thresholds"].items()))
    unknown, unknown_test = fit_unknown_answer(config, trainer, data, val_logits, val_features, test, log)
    spec.train_opts = train_options(config, processes, seed, precision)
    spec.thresholds, spec.temperature, spec.unknown = calibration["thresholds"], calibration["temperature"], unknown
    spec.provenance = provenance(split_hash=split_hash(data.split))
    path = os.path.join(config.model_dir, "ANIMAL-SPOT.pk")
    metrics = {"model": path, "classes": class_map.names, "class_map": class_map.to_dict(),
               "test": test.metrics.summary(class_map.names, intervals=True),
               "best_val": {"epoch": best.epoch, "monitor": best.monitor.name, best.monitor.name: best.metric,
                            **(best.summary or {})} if best else None,
               "last_val": trainer.results["val"].metrics.summary(class_map.names) if "val" in trainer.results
               else None,
               "calibration": calibration,
               "unknown": {**{k: v for k, v in unknown.items() if k != "centroids"}, "test": unknown_test},
               "options": spec.train_opts, "seed": seed,
               "seconds": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "provenance": spec.provenance}
    spec.card = model_card.card_data(spec, metrics, data, runtime.machine_description())
    save(config, trainer.model, spec, data, path, log)
    atomic_write_text(os.path.join(config.model_dir, "metrics.json"), json.dumps(metrics, indent=2, default=str))
    atomic_write_text(os.path.join(config.model_dir, "MODEL_CARD.md"), model_card.render(spec))


def fit_unknown_answer(config, trainer: Trainer, data: TrainingData, val_logits, val_features, test, log):
    """The unknown score's threshold on validation (centroids from up to 256 training
    clips per class, without augmentation), and how often known test clips are rejected."""
    score = config.unknown_score
    train_features = train_labels = None
    if score == "centroid_distance":
        train_logits, train_labels, train_features = trainer.evaluate(training_data.plain_loader(config, data))
        if train_features is None or val_features is None or test.features is None:
            log.warning("No pooled features from this network (compiled?): the unknown answer uses max_probability")
            score = "max_probability"
    unknown = fit_unknown(score, config.unknown_false_rejection, val_features, val_logits, train_features,
                          train_labels)
    report = unknown_report(unknown, test.features, test.logits)
    log.info(f"Unknown answer ({unknown['score']}): threshold {unknown['threshold']:.4f} rejects "
             f"{100 * config.unknown_false_rejection:.1f} % of known validation clips; on test "
             f"{pct(report['rejected_share'])} of known clips are called unknown")
    return unknown, report


def save(config, model, spec: ModelSpec, data: TrainingData, path: str, log) -> None:
    os.makedirs(config.model_dir, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    if config.jit_save:
        example = torch.rand(1, 1, data.frames, data.options.input_bins)
        save_jit_model(path, model, example, spec, data.options.jit_description(spec.classes, config.sequence_len))
        log.debug(f"Model successfully saved via torch jit: {path}")
    else:
        save_model(path, model, spec)
        log.debug(f"Model successfully saved via torch save: {path}")


if __name__ == "__main__":
    sys.exit(main())
