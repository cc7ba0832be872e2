"""Run trained models over recordings: ``python ANIMAL-SPOT/predict.py --model_path ... --input_file ...``.

The network and its preprocessing are rebuilt from the model file alone. For each
recording, ``<output_dir>/<name>_predict_output.log`` holds the original's header and one
record per window; ``--raven`` adds Raven selection tables, ``--format`` CSV, Parquet,
Audacity labels and JSON (``prediction/sinks.py``). Folders, URL prefixes and list files
are expanded (``data/sources.py``; sub-folders are mirrored in the output); a rerun skips
recordings whose outputs are complete (``--overwrite`` redoes them). Several
``--model_path`` files form an ensemble (probabilities averaged); ``--detector_path`` runs
a target/noise detector first and the classifier only on the windows it passes;
``--amp`` decides exactly as float32. Under ``torchrun`` or with ``--shard I/N`` each
process predicts its share and keeps a journal (``prediction/season.py``); ``--merge``
and ``--report`` work on such a folder. ``.onnx`` files (``export.py``) run with
onnxruntime.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from data.audio_io import AudioFileError, SignalReader
from data.sources import configure, recording_list, relative_name
from models.model_file import ModelFileError
from prediction.core import Predictor, PredictionModel
from prediction.decisions import Decider, DecisionRule, PostProcessing, log_events, table_events
from evaluation.log_format import LogFormatError, parse_log
from prediction.season import (SeasonJournal, deal, parse_shard, read_journals, read_run, report_lines, start_time,
                               write_run)
from prediction.sinks import (FORMATS, CombinedRavenSink, LatentSink, LogSink, PdfSink, RavenSink, Recording,
                              RunInfo, combined_table)
from utils import runtime
from utils.atomic import OutputError, atomic_write_text
from utils.classmap import ClassMap
from utils.logging import close_logger, setup_logger

KNOWN_ERRORS = (ModelFileError, AudioFileError, FileNotFoundError, ValueError, OutputError, LogFormatError, OSError)


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
    g.add_argument("--amp", action="store_true", help="reduced precision (bfloat16 / float16) where the device has it")
    g.add_argument("--memory_format", type=str, default="auto", choices=("auto", "contiguous", "channels_last"),
                   help="network memory format (auto: timed on the first batch)")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")
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
    e = p.add_argument_group("events (decisions and tables only; the log keeps the raw probabilities)")
    e.add_argument("--merge_gap", type=_non_negative, default=0.0, metavar="S",
                   help="merge detections of one class separated by at most S seconds (default 0: touching only)")
    e.add_argument("--min_duration", type=_non_negative, default=0.0, metavar="S",
                   help="drop events shorter than S seconds (default 0)")
    e.add_argument("--smooth", type=_positive(int), default=1, metavar="K",
                   help="smooth the probabilities over K windows before deciding (default 1: none)")
    e.add_argument("--smooth_method", type=str, default="median", choices=("median", "mean"),
                   help="how --smooth combines the windows (default median)")
    return p


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


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
    return os.path.normpath(os.path.join(args.output_dir, os.path.dirname(relative_name(args.input_file, path))))


def describe_recording(args, path: str, predictor: Predictor, reader: SignalReader) -> Recording:
    geometry = predictor.geometry(reader)
    return Recording(path, relative_name(args.input_file, path), file_stem(path), output_folder(args, path),
                     reader.seconds, reader.n_samples, geometry.step, reader.rate, reader.channels,
                     start_time(path, args.timestamp_format))


def outputs_complete(args, recording: Recording, sinks, predictor: Predictor, reader: SignalReader) -> bool:
    """Every output of the recording exists, and its log holds every window."""
    if not recording.folder:
        return False
    paths = [p for sink in sinks for p in sink.outputs(recording)]
    if not paths or not all(os.path.isfile(p) for p in paths):
        return False
    try:
        logs = [p for p in paths if p.endswith("_predict_output.log")]
        return all(len(parse_log(p).windows) == predictor.geometry(reader).count for p in logs)
    except (LogFormatError, OSError, ValueError):
        return False


def make_sinks(args, info: RunInfo, predictor: Predictor, shared: bool = False) -> List:
    """The outputs asked for, in the order they are written (``shared``: one of several
    processes, whose combined table is written at the end from every recording's log)."""
    chosen = [LogSink(info, each_channel=args.channels == "each")]
    if args.raven:
        chosen += [RavenSink(info)] + ([] if shared else [CombinedRavenSink(info)])
    chosen += [FORMATS[name](info) for name in dict.fromkeys(args.format)]
    if args.latent_extract:
        chosen.append(LatentSink(args.output_dir))
    if args.visualize:
        chosen.append(PdfSink(predictor.models[0].options, predictor.class_map))
    return chosen


# ------------------------------------------------------------------------ one file
def predict_recording(args, predictor: Predictor, info: RunInfo, sinks, recording: Recording,
                      reader: SignalReader, progress=None) -> None:
    """Stream one recording through the decider into every sink."""
    first = predictor.models[0]
    warn_sample_rate(recording.path, reader, first)
    geometry = predictor.geometry(reader)
    if reader.n_samples < geometry.window:
        logging.getLogger("PREDICT").info(
            f"{recording.path}: {reader.seconds:.3f} s, shorter than one window ({predictor.sequence_len} s): "
            "one window over the whole recording (zero-padded to one FFT frame where shorter)")
    for sink in sinks:
        sink.start(recording)
    pooled = args.latent_extract
    if args.channels == "each" and reader.channels > 1:
        runs = [(c, predictor.stream(recording.path, pooled, channel=c)) for c in range(1, reader.channels + 1)]
    elif args.channels == "max" and reader.channels > 1:
        runs = [(None, predictor.stream_max(recording.path, reader.channels, pooled))]
    else:
        runs = [(None, predictor.stream(recording.path, pooled, reader=reader))]
    events = []
    for channel, stream in runs:
        decider = Decider(info.rule, predictor.class_map, info.post)
        for batch in stream:
            meta = [{"start_sample": batch.start_samples[i], "end_sample": batch.end_samples[i],
                     "channel": channel if channel is not None else (batch.channels[i] if batch.channels else None),
                     "source": (batch, i)} for i in range(len(batch.starts))]
            windows = decider.feed(batch.starts, batch.ends, batch.probs, batch.unknown, meta)
            for sink in sinks:
                sink.windows(recording, channel, windows)
            if progress is not None:
                progress(len(batch.starts) * geometry.step / geometry.sr / len(runs))
        windows = decider.flush()
        for sink in sinks:
            sink.windows(recording, channel, windows)
        events += decider.events(recording.stem)
    events.sort(key=lambda e: (e.begin, e.channel))
    for sink in sinks:
        sink.end(recording, events)
    return geometry.count * len(runs)


def warn_sample_rate(path: str, reader: SignalReader, model: PredictionModel) -> None:
    fmax = model.options.fmax
    if reader.rate < 2 * fmax:
        logging.getLogger("PREDICT").warning(
            f"{path}: sampled at {reader.rate} Hz, below twice the model's fmax ({fmax} Hz): the band above "
            f"{reader.rate / 2:g} Hz is empty in this recording")


# ----------------------------------------------------------------------- the run
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.describe:
        return describe(args.describe)
    first = int(os.environ.get("RANK", "0")) == 0          # under torchrun only process 0 writes PREDICT.log
    try:
        log = setup_logger("PREDICT", args.log_dir if first else None, "PREDICT.log", args.debug)
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


def describe(path: str) -> int:
    """``--describe M.pk``: the model card, from the model file alone."""
    from models.model_card import render
    from models.model_file import load_model

    try:
        print(render(load_model(path).spec, os.path.basename(path)))
        return 0
    except ModelFileError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1


def check_arguments(args, log: logging.Logger) -> List[str]:
    if not args.model_path:
        raise ValueError("--model_path is required")
    if args.input_file is None:
        raise ValueError("no audio file or directory of audio files have been specified!")
    if (args.latent_extract or args.visualize or args.raven or args.format) and not args.output_dir:
        raise ValueError("--latent_extract, --visualize, --raven and --format need --output_dir")
    if args.checkpoint_path:
        log.warning("--checkpoint_path is not used; the model comes from --model_path")
    files = recording_list(args.input_file)
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


def make_predictor(args, log: logging.Logger, local_rank: int = 0) -> Predictor:
    device = runtime.choose_device(args.cuda, local_rank)
    amp = args.amp
    if amp and (args.smooth > 1 or args.channels == "max"):
        log.warning("--amp decides exactly as float32 only window by window: with --smooth or --channels max the "
                    "run is float32")
        amp = False
    precision = runtime.choose_precision(device, amp)
    open_model = lambda path: PredictionModel.open(path, device, args.jit_load, precision, args.memory_format,
                                                   args.min_max_norm)
    models = [open_model(p) for p in model_paths(args.model_path)]
    detector = open_model(args.detector_path) if args.detector_path else None
    for model in models:
        log.debug(f"Model successfully load via torch {'jit' if args.jit_load else 'load'}: {model.path}")
        log.info(getattr(model.backend, "model", model.backend))
    return Predictor(models, args.sequence_len, args.hop, args.batch_size, detector, args.detector_threshold,
                     device, prefetch=args.num_workers > 0 and device.type != "cpu", unknown=args.unknown)


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


def amp_risk(rule: DecisionRule, class_map):
    """For ``--amp``: the windows whose float32 decision could differ when each probability
    may be off by a factor ``rho`` (the top class, a threshold of the rule in force), and
    every detection (its probability is a Raven row's score)."""
    import numpy as np

    from evaluation.calibration import calibrated_from_probabilities

    names, binary = class_map.names, class_map.is_binary

    def near(values, limit, rho):
        return (values * rho >= limit) & (values / rho < limit)

    def at_risk(probs, rho):
        top2 = np.sort(probs, axis=1)[:, -2:]
        risk = top2[:, 1] <= rho * rho * top2[:, 0]
        if rule.thresholds is None:
            risk |= near(probs[:, 1] if binary else probs.max(axis=1), rule.threshold, rho)
        else:
            calibrated = calibrated_from_probabilities(probs, rule.temperature)
            rho_t = rho ** (2.0 / rule.temperature)          # calibration divides the log-probabilities by T
            top = calibrated.argmax(axis=1)
            for c, name in enumerate(names):
                limit = rule.thresholds.get(name)
                if limit is not None:
                    risk |= near(calibrated[:, c], limit, rho_t) & ((c == 1) if binary else (top == c))
        risk |= np.asarray([rule.decide(p, class_map) is not None for p in probs], dtype=bool)
        return risk
    return at_risk


def run_info(args, predictor: Predictor, rule: DecisionRule) -> RunInfo:
    first = predictor.models[0]
    post = PostProcessing(args.merge_gap, args.min_duration, args.smooth, args.smooth_method)
    return RunInfo(model_paths=[m.path for m in predictor.models], class_map=predictor.class_map,
                   data_opts=first.spec.data_opts, sequence_len=predictor.sequence_len, hop=args.hop, rule=rule,
                   post=post, min_max_norm=first.options.min_max_norm, output_dir=args.output_dir, debug=args.debug,
                   unknown=args.unknown)


def run(args, log: logging.Logger) -> int:
    if args.report:
        lines, complete = report_lines(args.report)
        print("\n".join(lines))
        return 0 if complete else 1
    if args.merge:
        return merge(args.merge, log)
    configure(json.loads(args.storage_options) if args.storage_options else None)
    processes = runtime.start_processes(args.cuda)
    try:
        return predict_season(args, log, processes)
    finally:
        runtime.stop_processes(processes)


def my_share(args, files: List[str], processes) -> Tuple[List[str], str, bool]:
    """``(this process's recordings, its journal name, whether the run is shared)``."""
    shard = parse_shard(args.shard)
    if shard and processes.distributed:
        raise ValueError("--shard and torchrun divide the recordings in two ways: use one of them")
    if processes.distributed:
        return deal(files, processes.world)[processes.rank], f"rank{processes.rank + 1}of{processes.world}", True
    if shard:
        return deal(files, shard[1])[shard[0] - 1], f"shard{shard[0]}of{shard[1]}", True
    return files, "all", False


def predict_season(args, log: logging.Logger, processes) -> int:
    files = check_arguments(args, log)
    mine, tag, shared = my_share(args, files, processes)
    predictor = make_predictor(args, log, processes.local_rank)
    rule = decision_rule(args, predictor, log)
    info = run_info(args, predictor, rule)
    first = predictor.models[0]
    log.debug(f"dataOpts: {first.spec.data_opts}")
    log.debug(f"prediction length: {predictor.sequence_len}[s], hop length: {args.hop}[s], threshold: "
              f"{rule.threshold}, prediction fmin: {first.options.fmin}[Hz], prediction fmax: {first.options.fmax}[Hz]")
    log.info(f"Class Distribution: {predictor.class_map.to_dict()}")
    log.info(f"Predicting files names: {mine}")
    log.info(f"Predicting {len(mine)} files" + (f" (share {tag} of {len(files)})" if shared else ""))
    if info.post != PostProcessing():
        log.info(f"Events: {info.post.describe()}")
    journal = SeasonJournal(args.output_dir, tag) if args.output_dir else None
    if journal:
        write_run(args.output_dir, run_settings(args, files, info))
        journal.write("planned", recordings=mine)
    sinks = make_sinks(args, info, predictor, shared)
    guard = predictor.exact_amp(amp_risk(rule, predictor.class_map))
    failed = []
    progress = Progress(mine) if args.progress else None
    for path in mine:
        started = time.time()
        try:
            reader = SignalReader(path, first.options.sr)     # an unreadable file stops here
        except (AudioFileError, OSError, ValueError) as error:   # name it, go on with the other recordings
            failed.append(fail(log, journal, path, error))
            continue
        recording = describe_recording(args, path, predictor, reader)
        try:
            if not args.overwrite and not args.latent_extract and \
                    outputs_complete(args, recording, sinks, predictor, reader):
                log.info(f"{path}: outputs complete, skipped (--overwrite redoes it)")
                skipped(args, recording, sinks, info)
                if journal:
                    journal.write("skipped", recording=path, audio_seconds=reader.seconds)
                continue
            windows = predict_recording(args, predictor, info, sinks, recording, reader,
                                        progress.advance if progress else None)
            if journal:
                journal.write("done", recording=path, audio_seconds=reader.seconds, windows=windows,
                              wall_seconds=round(time.time() - started, 3))
        except (AudioFileError, OSError, ValueError) as error:
            failed.append(fail(log, journal, path, error))
            for sink in sinks:
                if isinstance(sink, LogSink):
                    sink.discard()
        finally:
            reader.close()
    if progress:
        progress.close()
    for sink in sinks:
        sink.close()
    if guard is not None:
        log.info(guard.report())
    if processes.distributed:
        failed_anywhere = sum(processes.gather(len(failed)))
        if processes.main and args.raven:
            write_combined(args.output_dir, log)
        if failed_anywhere:
            return 1
    if failed:
        log.error(f"{len(failed)} of {len(mine)} file(s) could not be read: {', '.join(failed)}")
        return 1
    return 0


def fail(log: logging.Logger, journal, path: str, error: Exception) -> str:
    reason = " ".join(str(error).split())
    log.error(reason if path in reason else f"{path}: {reason}")
    if journal:
        journal.write("failed", recording=path, reason=reason)
    return path


def run_settings(args, files: List[str], info: RunInfo) -> dict:
    """What ``--merge`` needs to write the combined table as one process would."""
    return {"input_file": args.input_file, "recordings": list(files), "threshold": info.rule.threshold,
            "thresholds": info.rule.thresholds, "temperature": info.rule.temperature, "post": vars(info.post),
            "channels": args.channels, "timestamp_format": args.timestamp_format, "classes": info.class_map.to_dict(),
            "data_opts": info.data_opts, "raven": args.raven, "models": info.model_paths}


def merge(output_dir: str, log: logging.Logger) -> int:
    """``--merge``: the combined table of a folder predicted in shares."""
    missing = write_combined(output_dir, log)
    if missing:
        log.error(f"{len(missing)} recording(s) have no prediction log yet (left out of the combined table): "
                  + ", ".join(missing))
        return 1
    return 0


def write_combined(output_dir: str, log: logging.Logger) -> List[str]:
    """``combined.Table.1.selections.txt`` from every recording's log, in the run's order;
    returns the recordings without a log."""
    settings = read_run(output_dir)
    seconds = {e["recording"]: e.get("audio_seconds", 0.0) for e in read_journals(output_dir)[0]
               if e["event"] in ("done", "skipped")}
    rule = DecisionRule(settings["threshold"], settings["thresholds"], settings["temperature"] or 1.0)
    post = PostProcessing(**settings["post"])
    rows, missing = [], []
    for path in settings["recordings"]:
        relative = relative_name(settings["input_file"], path)
        folder = os.path.normpath(os.path.join(output_dir, os.path.dirname(relative)))
        recording = Recording(path, relative, file_stem(path), folder, seconds.get(path, 0.0),
                              begin_time=start_time(path, settings["timestamp_format"]))
        recording.channels = 2 if settings["channels"] == "each" and \
            os.path.isfile(os.path.join(folder, f"{recording.stem}_ch2_predict_output.log")) else 1
        logs = [p for p in LogSink(None, each_channel=settings["channels"] == "each").outputs(recording)]
        if recording.channels > 1:
            logs = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                          if n.startswith(f"{recording.stem}_ch") and n.endswith("_predict_output.log"))
        if path not in seconds or not all(os.path.isfile(p) for p in logs):
            missing.append(path)
            continue
        events = []
        for name in logs:
            channel = int(name.rsplit("_ch", 1)[1].split("_", 1)[0]) if recording.channels > 1 else None
            events += [e if channel is None else dataclasses.replace(e, channel=channel)
                       for e in log_events(parse_log(name), rule, post, recording.stem)]
        events.sort(key=lambda e: (e.begin, e.channel))
        rows.append((recording, table_events(events, recording.seconds, ClassMap.from_dict(settings["classes"]))))
    atomic_write_text(os.path.join(output_dir, CombinedRavenSink.NAME), combined_table(rows, settings["data_opts"]))
    log.info(f"Written {os.path.join(output_dir, CombinedRavenSink.NAME)} ({len(rows)} recording(s))")
    return missing


def skipped(args, recording: Recording, sinks, info: RunInfo) -> None:
    """A recording done earlier still counts in the combined table (its events from its log)."""
    combined = [s for s in sinks if isinstance(s, CombinedRavenSink)]
    if not combined:
        return
    events = []
    for name in [s for s in sinks if isinstance(s, LogSink)][0].outputs(recording):
        channel = None
        parsed = parse_log(name)
        if args.channels == "each" and recording.channels > 1:
            channel = int(name.rsplit("_ch", 1)[1].split("_", 1)[0])
        events += [e if channel is None else dataclasses.replace(e, channel=channel)
                   for e in log_events(parsed, info.rule, info.post, recording.stem)]
    events.sort(key=lambda e: (e.begin, e.channel))
    for sink in combined:
        sink.end(recording, events)


class Progress:
    """Files, audio hours done, real-time factor and ETA on standard error (quiet when it
    is not a terminal)."""

    def __init__(self, files: List[str]):
        import time

        from tqdm import tqdm

        total = 0.0
        for path in files:
            if "://" in path:                 # remote: not opened twice
                continue
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
