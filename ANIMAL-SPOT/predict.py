"""Run trained models over recordings: ``python ANIMAL-SPOT/predict.py --model_path ... --input_file ...``.

The network and its preprocessing are rebuilt from the model file alone. For each
recording, ``<output_dir>/<name>_predict_output.log`` holds the original's header and one
record per window; ``--raven`` adds Raven selection tables. Folders are searched
recursively for .wav and .flac files (their sub-folders are mirrored in the output); a
rerun skips recordings whose outputs are complete (``--overwrite`` redoes them).
Several ``--model_path`` files form an ensemble (probabilities averaged);
``--detector_path`` runs a target/noise detector first and the classifier only on the
windows it passes. ``.onnx`` files (``export.py``) run with onnxruntime.
"""

import argparse
import logging
import os
import pickle
import sys
from typing import List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch

from data.audio_io import AudioFileError, SignalReader, recording_files
from models.model_file import ModelFileError
from prediction.core import Predictor, PredictionModel, WindowBatch
from prediction.log_format import LogFormatError, LogWriter, PredictionLog, WindowRecord, parse_log
from prediction.raven import DecisionRule, combined_table, selection_table
from utils import runtime
from utils.atomic import OutputError, atomic_write, atomic_write_text
from utils.logging import close_logger, setup_logger

KNOWN_ERRORS = (ModelFileError, AudioFileError, FileNotFoundError, ValueError, OutputError, LogFormatError)


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
    a("--no_cuda", dest="cuda", action="store_false", help="do not use a GPU")
    a("--visualize", action="store_true", help="write a PDF of the network input of every window")
    a("--jit_load", action="store_true", help="the model file is TorchScript (--jit_save)")
    a("--min_max_norm", action="store_true",
      help="min-max normalisation (models of this fork record it; needed for older model files)")
    a("--latent_extract", action="store_true", help="save pooled encoder features to animal-spot-classifier.p")
    a("--input_file", type=str, default=None, help="a recording, or a folder searched recursively (.wav, .flac)")
    g = p.add_argument_group("this fork")
    g.add_argument("--raven", action="store_true", help="also write Raven selection tables (per file and combined)")
    g.add_argument("--overwrite", action="store_true", help="redo recordings whose outputs are complete")
    g.add_argument("--detector_path", type=str, default=None,
                   help="a binary target/noise model run first; the classifier sees only the windows it passes")
    g.add_argument("--detector_threshold", type=float, default=None,
                   help="the detector's threshold (default: its stored threshold, else 0.5)")
    g.add_argument("--amp", action="store_true", help="reduced precision (bfloat16 / float16) where the device has it")
    g.add_argument("--memory_format", type=str, default="auto", choices=("auto", "contiguous", "channels_last"),
                   help="network memory format (auto: timed on the first batch)")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")
    return p


def model_paths(values: List[str]) -> List[str]:
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


# ------------------------------------------------------------------------- outputs
def file_stem(path: str) -> str:
    """Output name of a recording: its base name without the extension."""
    return os.path.splitext(os.path.basename(path))[0].strip()


def output_folder(args, path: str) -> Optional[str]:
    """``output_dir`` mirrored by the recording's sub-folder below ``--input_file``."""
    if not args.output_dir:
        return None
    if os.path.isdir(args.input_file):
        relative = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(args.input_file))
        return os.path.normpath(os.path.join(args.output_dir, relative))
    return args.output_dir


def log_path(args, path: str) -> Optional[str]:
    folder = output_folder(args, path)
    return os.path.join(folder, f"{file_stem(path)}_predict_output.log") if folder else None


def table_path(args, path: str) -> str:
    return os.path.join(output_folder(args, path), f"{file_stem(path)}.Table.1.selections.txt")


def outputs_complete(args, path: str, predictor: Predictor) -> bool:
    """A log with every window of the recording (and its table with --raven)."""
    out = log_path(args, path)
    if not out or not os.path.isfile(out) or (args.raven and not os.path.isfile(table_path(args, path))):
        return False
    try:
        reader = SignalReader(path, predictor.models[0].options.sr)
        return len(parse_log(out).windows) == predictor.geometry(reader).count
    except (AudioFileError, LogFormatError, OSError, ValueError):
        return False


# ------------------------------------------------------------------------ one file
class FileRun:
    """Writes one recording's outputs from the predictor's stream."""

    def __init__(self, args, predictor: Predictor, rule: DecisionRule, path: str, latent: Optional[dict]):
        self.args, self.predictor, self.rule, self.path, self.latent = args, predictor, rule, path, latent
        self.class_map = predictor.class_map
        self.reader = SignalReader(path, predictor.models[0].options.sr)     # an unreadable file stops here
        folder = output_folder(args, path)
        self.logger = setup_logger(f"{file_stem(path)}_predict_output", folder,
                                   f"{file_stem(path)}_predict_output.log", args.debug, console=True)
        self.writer = LogWriter(self.logger, self.class_map)
        self.log = PredictionLog(path, self.class_map.to_dict(), predictor.models[0].spec.data_opts)
        self.window = 0

    def run(self, progress=None) -> PredictionLog:
        first, reader = self.predictor.models[0], self.reader
        warn_sample_rate(self.path, reader, first)
        geometry = self.predictor.geometry(reader)
        if reader.n_samples < geometry.window:
            logging.getLogger("PREDICT").info(
                f"{self.path}: {reader.seconds:.3f} s, shorter than one window ({self.predictor.sequence_len} s): "
                "one window over the whole recording (zero-padded to one FFT frame where shorter)")
        o = first.options
        self.writer.header(self.path, ",".join(m.path for m in self.predictor.models), first.spec.data_opts,
                           self.predictor.sequence_len, self.args.hop, self.rule.threshold, o.fmin, o.fmax,
                           o.min_max_norm, reader.n_samples, geometry.step)
        pooled = self.args.latent_extract
        for batch in self.predictor.stream(self.path, pooled=pooled, reader=reader):
            self.write_batch(batch)
            if progress is not None:
                progress(len(batch.starts) * geometry.step / geometry.sr)
        return self.log

    def write_batch(self, batch: WindowBatch) -> None:
        for n in range(batch.probs.shape[0]):
            probs = [float(p) for p in batch.probs[n]]
            binary = self.class_map.is_binary
            c = max(range(len(probs)), key=probs.__getitem__)
            if binary or self.rule.thresholds:     # a detection, by the rule in force
                decision = int(self.rule.decide(probs, self.class_map) is not None)
            else:                                  # the original: the top class's probability
                decision = int(probs[c] >= self.rule.threshold)
            self.writer.record(batch.starts[n], batch.ends[n], probs, decision, batch.start_samples[n],
                               batch.end_samples[n])
            printed = probs[1] if binary else probs[c]
            self.log.add(WindowRecord(batch.starts[n], batch.ends[n], printed, None if binary else c,
                                      None if binary else probs, repr(printed)))
            if self.latent is not None:
                self.keep_latent(batch, n)
            if self.args.visualize:
                visualize(batch.inputs[n], self.predictor.models[0].options,
                          self.class_map.name_of(decision if binary else c), self.path,
                          output_folder(self.args, self.path), self.window)
            self.window += 1

    def keep_latent(self, batch: WindowBatch, n: int) -> None:
        base = self.path.replace(".wav", "")
        self.latent["filenames"].append(f"{base}_{batch.starts[n]}_{batch.ends[n]}.wav")
        self.latent["features"].append(batch.pooled[n].numpy())
        self.latent["spectra_input"].append(batch.inputs[n:n + 1].cpu())

    def close(self) -> None:
        self.reader.close()
        close_logger(self.logger)


def warn_sample_rate(path: str, reader: SignalReader, model: PredictionModel) -> None:
    fmax = model.options.fmax
    if reader.rate < 2 * fmax:
        logging.getLogger("PREDICT").warning(
            f"{path}: sampled at {reader.rate} Hz, below twice the model's fmax ({fmax} Hz): the band above "
            f"{reader.rate / 2:g} Hz is empty in this recording")


def visualize(item: torch.Tensor, options, label: str, path: str, folder: str, index: int) -> None:
    """A PDF of one window's network input (frequency x time)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = item[0].float().cpu().t().numpy()                                   # (F, T)
    figure, axis = plt.subplots(figsize=(5, 10))
    figure.suptitle("Spectrogram")
    axis.set_title("spectrogram")
    freqs = torch.linspace(options.fmin, options.fmax, spec.shape[0]).numpy()
    times = (torch.arange(spec.shape[1]) * options.hop_length / options.sr).numpy()
    mesh = axis.pcolormesh(times, freqs, spec, cmap="viridis", shading="auto")
    axis.set_xlabel("time [s]")
    axis.set_ylabel("frequency [Hz]")
    figure.colorbar(mesh, ax=axis)
    out = os.path.join(folder, f"net_input_spec_{index}_{label}_{file_stem(path)}.pdf")
    with atomic_write(out, "wb", durable=False) as handle:
        figure.savefig(handle, format="pdf")
    plt.close(figure)


# ----------------------------------------------------------------------- the run
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        log = setup_logger("PREDICT", args.log_dir, "PREDICT.log", args.debug)
    except OutputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    library = setup_logger("ANIMAL-SPOT", None, debug=args.debug)     # the modules' notes, on the console
    try:
        return run(args, log)
    except KNOWN_ERRORS as error:
        log.error(str(error))
        return 1
    except KeyboardInterrupt:
        log.warning("Interrupted.")
        return 1
    finally:
        close_logger(log)
        close_logger(library)


def check_arguments(args, log: logging.Logger) -> List[str]:
    if not args.model_path:
        raise ValueError("--model_path is required")
    if args.input_file is None:
        raise ValueError("no audio file or directory of audio files have been specified!")
    if (args.latent_extract or args.visualize or args.raven) and not args.output_dir:
        raise ValueError("--latent_extract, --visualize and --raven need --output_dir")
    if args.checkpoint_path:
        log.warning("--checkpoint_path is not used; the model comes from --model_path")
    files = recording_files(args.input_file)
    if not files:
        raise ValueError(f"--input_file {args.input_file}: no .wav or .flac files in this folder")
    if args.output_dir:
        try:
            os.makedirs(args.output_dir, exist_ok=True)
        except OSError as error:
            raise OutputError(f"--output_dir {args.output_dir}: cannot create it ({error.strerror})") from None
        if not os.access(args.output_dir, os.W_OK):
            raise OutputError(f"--output_dir {args.output_dir}: not writable")
    return files


def make_predictor(args, log: logging.Logger) -> Predictor:
    device = runtime.choose_device(args.cuda)
    precision = runtime.choose_precision(device, args.amp)
    open_model = lambda path: PredictionModel.open(path, device, args.jit_load, precision, args.memory_format,
                                                   args.min_max_norm)
    models = [open_model(p) for p in model_paths(args.model_path)]
    detector = open_model(args.detector_path) if args.detector_path else None
    for model in models:
        log.debug(f"Model successfully load via torch {'jit' if args.jit_load else 'load'}: {model.path}")
        log.info(getattr(model.backend, "model", model.backend))
    return Predictor(models, args.sequence_len, args.hop, args.batch_size, detector, args.detector_threshold,
                     device, prefetch=args.num_workers > 0 and device.type != "cpu")


def decision_rule(args, predictor: Predictor, log: logging.Logger) -> DecisionRule:
    if args.threshold is not None:
        return DecisionRule(args.threshold)
    if len(predictor.models) > 1:
        log.info("An ensemble has no fitted thresholds: deciding with --threshold 0.5")
        return DecisionRule(0.5)
    rule = DecisionRule.from_model(predictor.models[0].spec if predictor.detector is None else None)
    if rule.thresholds:
        log.info("Decisions: the model's per-class thresholds on calibrated probabilities "
                 f"(temperature {rule.temperature:.3f}): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in rule.thresholds.items()))
    return rule


def run(args, log: logging.Logger) -> int:
    files = check_arguments(args, log)
    predictor = make_predictor(args, log)
    rule = decision_rule(args, predictor, log)
    first = predictor.models[0]
    log.debug(f"dataOpts: {first.spec.data_opts}")
    log.debug(f"prediction length: {predictor.sequence_len}[s], hop length: {args.hop}[s], threshold: "
              f"{rule.threshold}, prediction fmin: {first.options.fmin}[Hz], prediction fmax: {first.options.fmax}[Hz]")
    log.info(f"Class Distribution: {predictor.class_map.to_dict()}")
    log.info(f"Predicting files names: {files}")
    log.info(f"Predicting {len(files)} files")
    latent = {"filenames": [], "features": [], "spectra_input": []} if args.latent_extract else None
    done, failed, last_run = [], [], None
    progress = Progress(files) if args.progress else None
    for path in files:
        if not args.overwrite and not args.latent_extract and outputs_complete(args, path, predictor):
            log.info(f"{path}: outputs complete, skipped (--overwrite redoes it)")
            done.append((path, parse_log(log_path(args, path))))
            continue
        file_run = None
        try:
            file_run = FileRun(args, predictor, rule, path, latent)
            result = file_run.run(progress.advance if progress else None)
        except AudioFileError as error:   # name it, go on with the other recordings
            log.error(str(error))
            failed.append(path)
            if file_run is not None:
                file_run.close()
            continue
        if args.raven:
            atomic_write_text(table_path(args, path), selection_table(result, rule, score=True))
        done.append((path, result))
        if last_run is not None:
            last_run.close()
        last_run = file_run
    if progress:
        progress.close()
    finish(args, predictor, rule, done, latent, last_run)
    if failed:
        log.error(f"{len(failed)} of {len(files)} file(s) could not be read: {', '.join(failed)}")
        return 1
    return 0


def finish(args, predictor, rule, done, latent, last_run) -> None:
    if args.raven and done:
        rows = [(path, result, SignalReader(path, predictor.models[0].options.sr).seconds) for path, result in done]
        atomic_write_text(os.path.join(args.output_dir, "combined.Table.1.selections.txt"), combined_table(rows, rule))
    if last_run is not None:
        if latent is not None:
            with atomic_write(os.path.join(args.output_dir, "animal-spot-classifier.p"), "wb") as handle:
                pickle.dump(latent, handle)
            last_run.logger.debug("Successfully saved latent classification features (final hidden layer)!")
        last_run.logger.debug("Finished proccessing")
        last_run.close()


class Progress:
    """Files, audio hours done, real-time factor and ETA on standard error (quiet when it
    is not a terminal)."""

    def __init__(self, files: List[str]):
        import time

        from tqdm import tqdm

        total = 0.0
        for path in files:
            try:
                total += SignalReader(path, 8000).seconds
            except AudioFileError:
                pass
        self.clock = time.time
        self.started, self.done = self.clock(), 0.0
        self.bar = tqdm(total=round(total / 3600, 4), unit="h audio", desc=f"{len(files)} file(s)", disable=None,
                        leave=False)

    def advance(self, seconds: float) -> None:
        self.done += seconds
        rtf = self.done / max(self.clock() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rtf:.0f}x real time", refresh=False)
        self.bar.update(seconds / 3600)

    def close(self) -> None:
        self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
