"""``predict.py``'s options, parsed once into a frozen, typed ``PredictConfig`` (one field
per flag, named as the flag: ``--hop`` -> ``config.hop``), as training's ``RunConfig``."""

import argparse
from typing import List, Optional, Sequence

from .tables import FORMATS
from ..utils import run_config


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Detect / classify calls in recordings with ANIMAL-SPOT models.")
    for add in (add_original_options, add_fork_options, add_season_options, add_event_options):
        add(p)
    return p


def add_original_options(p: argparse.ArgumentParser) -> None:
    """The original's flags (spec §3), with this project's help."""
    a = p.add_argument
    a("-d", "--debug", action="store_true", help="log at DEBUG level (adds per-window extract lines)")
    a("--model_path", type=str, nargs="+", default=None,
      help="ANIMAL-SPOT.pk (or .onnx) written by training; several files (or a comma-separated list) = an ensemble")
    a("--checkpoint_path", type=str, default=None, help="accepted for compatibility; not used")
    a("--log_dir", type=str, default=None, help="write PREDICT.log here")
    a("--output_dir", type=str, default=None, help="per-recording logs, Raven tables, latent features, PDFs")
    a("--sequence_len", type=_positive(float), default=None,
      help="window length in seconds (default: the model's training segment length, else 2)")
    a("--hop", type=_positive(float), default=1, help="window step in seconds (default 1)")
    a("--threshold", type=float, default=None,
      help="decision threshold on the raw probability (default 0.5; without it, a model with per-class "
           "thresholds decides on calibrated probabilities)")
    a("--batch_size", type=_positive(int), default=16, help="windows per forward pass (results do not depend on it)")
    a("--num_workers", type=int, default=4,
      help="> 0: on a GPU, read and transform the next batch while the network runs (on a CPU the network "
           "already uses every core, so batches are prepared in turn)")
    a("--no_cuda", action="store_true", help="do not use a GPU")
    a("--visualize", action="store_true", help="write a PDF of the network input of every window")
    a("--jit_load", action="store_true", help="the model file is TorchScript (--jit_save)")
    a("--min_max_norm", action="store_true",
      help="min-max normalisation (models of this fork record it; needed for older model files)")
    a("--latent_extract", action="store_true", help="save pooled encoder features to animal-spot-classifier.p")
    a("--input_file", type=str, default=None, help="a recording, or a folder searched recursively (.wav, .flac)")


def add_fork_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("this fork")
    g.add_argument("--raven", action="store_true", help="also write Raven selection tables (per file and combined)")
    g.add_argument("--format", type=str, nargs="+", default=[], choices=sorted(FORMATS), metavar="FORMAT",
                   help=f"also write the selections per recording as {', '.join(sorted(FORMATS))} (one or more)")
    g.add_argument("--overwrite", action="store_true", help="redo recordings whose outputs are complete")
    g.add_argument("--detector_path", type=str, default=None,
                   help="a binary target/noise model run first; the classifier sees only the windows it passes")
    g.add_argument("--detector_threshold", type=float, default=None,
                   help="the detector's threshold (default: its stored threshold, else 0.5)")
    g.add_argument("--unknown", action="store_true",
                   help="label detections beyond the model's unknown threshold 'unknown' (models trained here)")
    g.add_argument("--channels", type=str, default="mean", choices=("mean", "max", "each"),
                   help="several channels: mean (down-mix, default), max (per window the channel with the most "
                        "probable top class) or each (every channel; one log per channel)")
    g.add_argument("--describe", type=str, default=None, metavar="M.pk", help="print the model card of M.pk and exit")
    g.add_argument("--amp", action="store_true",
                   help="reduced precision (bfloat16 / float16) where the device has it and it is faster here; every "
                        "32nd window is also computed in float32 and the share decided otherwise is reported")
    g.add_argument("--memory_format", type=str, default="auto", choices=("auto", "contiguous", "channels_last"),
                   help="network memory format (auto: timed on the first batches)")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    g.add_argument("--verbose", action="store_true",
                   help="echo every log line (each window's record) to the console, as the original did; by default "
                        "a terminal gets a progress bar and a summary (the logs are written either way), and a "
                        "console that is not a terminal (a pipe, a job's output file) gets the original's lines")


def add_season_options(p: argparse.ArgumentParser) -> None:
    season = p.add_argument_group("seasons (many processes and machines, journals, time stamps, cloud archives)")
    season.add_argument("--shard", default=None, metavar="I/N",
                        help="predict the I-th of N shares of the recordings (job arrays); no combined table: "
                             "predict.py --merge OUTPUT_DIR writes it")
    season.add_argument("--merge", default=None, metavar="OUTPUT_DIR",
                        help="write the combined Raven table of a folder predicted in shares, and exit")
    season.add_argument("--report", default=None, metavar="OUTPUT_DIR",
                        help="print the season's account from the folder's journals, and exit")
    season.add_argument("--timestamp_format", default=None, metavar="FORMAT",
                        help="the recorders' start time in the file names as a strftime pattern, e.g. "
                             "%%Y%%m%%d_%%H%%M%%S (default: the common styles are recognised)")
    season.add_argument("--storage_options", default=None, metavar="JSON",
                        help='options of the remote filesystem, e.g. \'{"anon": true}\' for public S3 buckets')


def add_event_options(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("events (decisions and tables only; the log keeps the raw probabilities)")
    e.add_argument("--merge_gap", type=_non_negative, default=0.0, metavar="S",
                   help="merge detections of one class separated by at most S seconds (default 0: touching only)")
    e.add_argument("--min_duration", type=_non_negative, default=0.0, metavar="S",
                   help="drop events shorter than S seconds (default 0)")
    e.add_argument("--smooth", type=_positive(int), default=1, metavar="K",
                   help="smooth the probabilities over K windows before deciding (default 1: none)")
    e.add_argument("--smooth_method", type=str, default="median", choices=("median", "mean"),
                   help="how --smooth combines the windows (default median)")


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


PredictConfig = run_config.config_class(build_parser(), "PredictConfig")


def parse(argv: Optional[Sequence[str]] = None) -> "PredictConfig":
    return run_config.parse(build_parser(), PredictConfig, argv)


def model_paths(values: Sequence[str]) -> List[str]:
    """``--model_path a.pk b.pk`` or ``a.pk,b.pk``."""
    return [p.strip() for value in values for p in value.split(",") if p.strip()]
