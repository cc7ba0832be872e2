"""Run trained models over recordings: ``python ANIMAL-SPOT/predict.py --model_path ... --input_file ...``.

The network and its preprocessing are rebuilt from the model file alone. For each
recording, ``<output_dir>/<name>_predict_output.log`` holds the original's header and one
record per window; ``--raven`` adds Raven selection tables, ``--format`` CSV, Parquet,
Audacity labels and JSON. Folders, URL prefixes and list files are expanded (sub-folders
are mirrored in the output); a rerun skips recordings whose outputs are complete
(``--overwrite`` redoes them). Several ``--model_path`` files form an ensemble
(probabilities averaged); ``--detector_path`` runs a target/noise detector first and the
classifier only on the windows it passes; ``--amp`` runs in reduced precision where that
is faster here and reports how many sampled windows it decided otherwise than float32.
Under ``torchrun`` or with ``--shard I/N`` each process predicts its share and keeps a
journal; ``--merge`` and ``--report`` work on such a folder. ``.onnx`` files
(``export.py``) run with onnxruntime.

This file is the command: its options are ``prediction.options``, the run is
``prediction.run`` (recordings -> window batches -> decider -> sinks), the outputs are the
sinks of ``prediction.sinks`` and ``prediction.tables``, read back by ``prediction.folder``.
"""

import json
import logging
import os
import sys
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from .data.audio_io import AudioFileError
from .data.sources import configure, recording_list
from .evaluation.log_format import LogFormatError
from .models.model_card import render
from .models.model_file import ModelFileError, load_model
from .prediction.core import Predictor, PredictionModel
from .prediction.decisions import DecisionRule, PostProcessing
from .prediction.options import PredictConfig, build_parser, model_paths, parse  # noqa: F401  (build_parser: its old place)
from .prediction.precision import Disagreement
from .prediction.folder import prepare_folder
from .prediction.records import RunFile, check_names, resolved_path
from .prediction.run import (AudioSource, Decisions, Layout, Progress, check_owners, journal_owners, run_recordings,
                            write_combined)
from .prediction.season import JOURNAL_PREFIX, SeasonJournal, report_lines, share
from .prediction.sinks import EventCount, LatentSink, LogSink, PdfSink, RunInfo
from .prediction.tables import FORMATS, CombinedRavenSink, RavenSink
from .utils import cli, runtime
from .utils.atomic import OutputError, make_folder
from .utils.logging import to_file

KNOWN_ERRORS = (ModelFileError, AudioFileError, FileNotFoundError, ValueError, OutputError, LogFormatError, OSError)


def main(argv: Optional[List[str]] = None) -> int:
    config = parse(argv)
    if config.describe:
        return describe(config.describe)
    first = int(os.environ.get("RANK", "0")) == 0          # under torchrun only process 0 writes PREDICT.log
    return cli.run(lambda log: run(config, log), "PREDICT", config.log_dir if first else None, "PREDICT.log",
                   config.debug, KNOWN_ERRORS, library=True)


def describe(path: str) -> int:
    """``--describe M.pk``: the model card, from the model file alone."""
    try:
        cli.print_text(render(load_model(path).spec, os.path.basename(path)))
        return 0
    except ModelFileError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1


def run(config: PredictConfig, log: logging.Logger) -> int:
    if config.report:
        lines, complete = report_lines(config.report)
        cli.print_text("\n".join(lines))
        return 0 if complete else 1
    if config.merge:
        missing = write_combined(config.merge)
        if missing:
            log.error(f"{len(missing)} recording(s) have no prediction log yet (left out of the combined table): "
                      + ", ".join(missing))
            return 1
        return 0
    configure(json.loads(config.storage_options) if config.storage_options else None)
    processes = runtime.start_processes(not config.no_cuda)
    try:
        return predict_season(config, log, processes)
    finally:
        runtime.stop_processes(processes)


def check_inputs(config: PredictConfig, log: logging.Logger) -> List[str]:
    if not config.model_path:
        raise ValueError("--model_path is required")
    if config.input_file is None:
        raise ValueError("no audio file or directory of audio files have been specified!")
    if (config.latent_extract or config.visualize or config.raven or config.format) and not config.output_dir:
        raise ValueError("--latent_extract, --visualize, --raven and --format need --output_dir")
    if config.checkpoint_path:
        log.warning("--checkpoint_path is not used; the model comes from --model_path")
    files = recording_list(config.input_file)
    if not files:
        raise ValueError(f"--input_file {config.input_file}: no .wav or .flac files in this folder")
    check_names(files)
    if config.output_dir:
        Layout(config.input_file, config.output_dir).check_unique(files, each_channel=config.channels == "each")
        make_folder(config.output_dir)
    return files


def make_predictor(config: PredictConfig, log: logging.Logger, local_rank: int = 0) -> Predictor:
    device = runtime.choose_device(not config.no_cuda, local_rank)
    precision = runtime.choose_precision(device, config.amp)

    def open_model(path):
        return PredictionModel.open(path, device, config.jit_load, precision, config.memory_format,
                                    config.min_max_norm)
    models = [open_model(p) for p in model_paths(config.model_path)]
    detector = open_model(config.detector_path) if config.detector_path else None
    for model in models:
        log.debug(f"Model successfully load via torch {'jit' if config.jit_load else 'load'}: {model.path}")
        network = str(getattr(model.backend, "model", model.backend))
        if echoes(config):
            log.info(network)
        else:
            to_file(log, logging.INFO, network)        # PREDICT.log keeps the network; the console is spared it
    return Predictor(models, config.sequence_len, config.hop, config.batch_size, detector, config.detector_threshold,
                     device, prefetch=config.num_workers > 0 and device.type != "cpu", unknown=config.unknown)


def decision_rule(config: PredictConfig, predictor: Predictor, log: logging.Logger) -> DecisionRule:
    if config.threshold is not None:
        return DecisionRule(config.threshold)
    if len(predictor.models) > 1:
        log.info("An ensemble has no fitted thresholds: deciding with --threshold 0.5")
        return DecisionRule(0.5)
    rule = DecisionRule.from_model(predictor.models[0].spec if predictor.detector is None else None)
    if rule.thresholds:
        log.info("Decisions: the model's per-class thresholds on calibrated probabilities "
                 f"(temperature {rule.temperature:.3f}): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in rule.thresholds.items()))
    return rule


def echoes(config: PredictConfig) -> bool:
    """Whether every log line also goes to the console: ``--verbose``, no ``--output_dir``
    (the console is the only output), or a console that is not a terminal (the original's
    behaviour for scripts that read it)."""
    return config.verbose or not config.output_dir or not sys.stderr.isatty()


def run_info(config: PredictConfig, predictor: Predictor, rule: DecisionRule) -> RunInfo:
    first = predictor.models[0]
    post = PostProcessing(config.merge_gap, config.min_duration, config.smooth, config.smooth_method)
    return RunInfo(model_paths=[m.path for m in predictor.models], class_map=predictor.class_map,
                   data_opts=first.spec.data_opts, sequence_len=predictor.sequence_len, hop=config.hop, rule=rule,
                   post=post, min_max_norm=first.options.min_max_norm, output_dir=config.output_dir,
                   debug=config.debug, unknown=config.unknown)


def make_sinks(config: PredictConfig, info: RunInfo, predictor: Predictor, shared: bool = False) -> List:
    """The outputs asked for, in the order they are written (``shared``: one of several
    processes, whose combined table is written at the end from every recording's log)."""
    chosen = [LogSink(info, each_channel=config.channels == "each", echo=echoes(config)), EventCount()]
    if config.raven:
        chosen += [RavenSink(info)] + ([] if shared else [CombinedRavenSink(info)])
    chosen += [FORMATS[name](info) for name in dict.fromkeys(config.format)]
    if config.latent_extract:
        chosen.append(LatentSink(config.output_dir))
    if config.visualize:
        chosen.append(PdfSink(predictor.models[0].options, predictor.class_map))
    return chosen


def run_file(config: PredictConfig, files: List[str], info: RunInfo, layout: Layout) -> RunFile:
    """``predict_run.json``: what the run decided with, so that the folder is read back as
    it was written (``--merge``, the review, ``score.py``)."""
    return RunFile(input_file=resolved_path(config.input_file), recordings=tuple(files),
                   outputs=tuple(layout.key(p) for p in files),
                   threshold=info.rule.threshold, thresholds=info.rule.thresholds, temperature=info.rule.temperature,
                   post=info.post, channels=config.channels, timestamp_format=config.timestamp_format,
                   classes=info.class_map.to_dict(), data_opts=info.data_opts, raven=config.raven,
                   models=tuple(resolved_path(p) for p in info.model_paths),
                   detector=resolved_path(config.detector_path),
                   detector_threshold=config.detector_threshold if config.detector_path else None,
                   unknown=config.unknown, sequence_len=info.sequence_len, hop=info.hop)


def predict_season(config: PredictConfig, log: logging.Logger, processes) -> int:
    files = check_inputs(config, log)
    mine, tag, shared = share(files, config.shard, processes)
    predictor = make_predictor(config, log, processes.local_rank)
    rule = decision_rule(config, predictor, log)
    info = run_info(config, predictor, rule)
    first = predictor.models[0]
    log.debug(f"dataOpts: {first.spec.data_opts}")
    log.debug(f"prediction length: {predictor.sequence_len}[s], hop length: {config.hop}[s], threshold: "
              f"{rule.threshold}, prediction fmin: {first.options.fmin}[Hz], prediction fmax: {first.options.fmax}[Hz]")
    log.info(f"Class Distribution: {predictor.class_map.to_dict()}")
    log.info(f"Predicting files names: {mine}")
    log.info(f"Predicting {len(mine)} files" + (f" (share {tag} of {len(files)})" if shared else ""))
    if info.post != PostProcessing():
        log.info(f"Events: {info.post.describe()}")
    layout = Layout(config.input_file, config.output_dir, config.timestamp_format)
    journal = SeasonJournal(config.output_dir, tag) if config.output_dir else None
    kept = False
    sinks = make_sinks(config, info, predictor, shared)
    if journal:
        if not config.overwrite:
            check_owners(files, layout, sinks, journal_owners(config.output_dir, JOURNAL_PREFIX))   # every process alike
        run = prepare_folder(config.output_dir, run_file(config, files, info, layout), config.overwrite, log,
                             main=processes.main)
        kept = len(run.recordings) > len(files)         # an earlier run's recordings stay: in the combined table too
        journal.write("planned", recordings=mine)
    check = Disagreement() if any(getattr(m.backend, "reduced", False) for m in predictor.members) else None
    progress = None if config.no_progress else Progress(mine)
    failed = run_recordings(mine, AudioSource(predictor, config.channels, config.latent_extract), layout, sinks,
                            Decisions(rule, predictor.class_map, info.post), journal, config.overwrite,
                            progress.advance if progress else None, check)
    if progress:
        progress.close()
    for sink in sinks:
        sink.close()
    if check is not None and check.report():
        log.info(check.report())
    counted = next((sink for sink in sinks if isinstance(sink, EventCount)), None)
    if counted is not None and mine:
        log.info(f"Summary: {counted.summary()}; {len(failed)} failed"
                 + (f"; outputs in {config.output_dir}" if config.output_dir else ""))
    if journal and kept and config.raven and not shared:
        write_combined(config.output_dir)
    if processes.distributed:
        failed_anywhere = sum(processes.gather(len(failed)))
        if processes.main and config.raven:
            write_combined(config.output_dir)
        if failed_anywhere:
            return 1
    if failed:
        log.error(f"{len(failed)} of {len(mine)} file(s) could not be read: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
