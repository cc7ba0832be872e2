"""``main.py``'s options: every flag of the original with its default, the backbone
registry's flags, and this project's (imbalance tools, schedulers, precision,
reproducibility, augmentation, model selection), parsed once into a frozen, typed
``RunConfig`` (``utils.run_config``). ``--config run.json`` repeats a stored run
(``utils.cli.stored_options``)."""

import argparse
import os
from typing import List, Optional

from ..data.features import FREQ_COMPRESSIONS
from ..evaluation.calibration import UNKNOWN_SCORES
from ..evaluation.metrics import METRICS
from ..models import backbones
from ..models.losses import SCHEMES, SEED_SPELLINGS
from ..utils import cli, run_config

SCHEDULERS = ("plateau", "onecycle", "cosine")


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
    a("--config", type=str, default=None, metavar="run.json",
      help="repeat a stored run: its options (run.json beside the model, or metrics.json) are the defaults, "
           "flags given here win")
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
    g.add_argument("--freeze_backbone", action="store_true",
                   help="train the head only: the encoder's weights stay as they start (pretrained, or "
                        "--transfer_from)")
    g.add_argument("--backbone_lr", type=float, default=None,
                   help="the encoder's own learning rate (multiplied by the batch size as --lr; default: --lr)")
    g.add_argument("--audio_window", type=float, default=None, metavar="SECONDS",
                   help="--backbone birdnet: the raw-audio window in seconds (BirdNET's own: 3; default: "
                        "--sequence_len)")
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
    g.add_argument("--spec_augment", action="store_true", help="time and frequency masks on the network input (--backbone birdnet: on its front end's "
                        "image of 96 mel bands, frames of 5.8 ms)")
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
    m.add_argument("--bn_statistics", type=str, default="running", choices=("running", "recomputed"),
                   help="BatchNorm statistics for validation, test and the model file: the running averages of the "
                        "training steps (the original's, default; they trail the weights), or recomputed on up to "
                        "1024 training clips with the current weights before each validation (for sets of a few "
                        "dozen clips, where the averages lag far behind)")
    m.add_argument("--folds", type=_range_type(int, 2, what="--folds"), default=None, metavar="K",
                   help="cross-validation: K runs whose test partitions are disjoint groups of tapes")
    m.add_argument("--unknown_false_rejection", type=_range_type(float, 0.0, 1.0, True, "--unknown_false_rejection"),
                   default=0.05, help="share of known validation clips the unknown threshold rejects (default 0.05)")
    m.add_argument("--unknown_score", type=str, default=UNKNOWN_SCORES[0], choices=UNKNOWN_SCORES,
                   help=f"out-of-distribution score fitted for predict.py --unknown (default {UNKNOWN_SCORES[0]})")


RunConfig = run_config.config_class(build_parser())
# where a run writes besides --model_dir: a repeat (--config run.json) starts fresh below its new --model_dir
RUN_FOLDERS = {"checkpoint_dir": "checkpoints", "log_dir": "logs", "summary_dir": "summaries"}


def parse(argv: Optional[List[str]] = None) -> "RunConfig":
    """The command line (with ``--config FILE``'s options as defaults) as the run's frozen
    configuration."""
    parser = build_parser()
    try:
        argv = cli.stored_options(parser, argv, fresh=("model_dir",) + tuple(RUN_FOLDERS))
    except cli.StoredOptionsError as error:
        parser.error(str(error))                      # as a bad flag: the message and exit status 2
    config = run_config.parse(parser, RunConfig, argv)
    repeated = getattr(parser, "stored_fresh", None)
    if repeated is None:
        return config
    if not config.model_dir:
        parser.error("--config repeats a stored run: give it a new --model_dir (its checkpoints, log and TensorBoard "
                     "folders go below it unless given too)")
    given = {key: getattr(config, key) for key in RUN_FOLDERS if getattr(config, key) != parser.get_default(key)}
    placed = {key: os.path.join(config.model_dir, RUN_FOLDERS[key]) for key in repeated
              if key in RUN_FOLDERS and key not in given}
    return config.replace(**placed)
