"""Event-level scores of predictions against annotated recordings.

    python EVALUATION/score.py --predictions DIR --annotations DIR --output_dir DIR \
        [--label_column "Sound type"] [--matching overlap|iou] [--min_overlap 0.5] [--iou 0.3] \
        [--threshold 0.5|model] [--merge_gap 0 0.5 1] [--min_duration 0 0.25] [--smooth 1 3 5]
    python EVALUATION/score.py EVALUATION/score_config          # the launcher style

Predictions: a prediction folder, read as every tool of this project reads one
(``prediction.folder``): per recording its logs win over its table; a recording with logs
is decided as its run decided (``predict_run.json``; else the log's own threshold) unless
``--threshold`` says otherwise (a number, or ``model`` for the model's per-class
thresholds), with the run's event settings unless event settings are given.
Annotations: Raven selection tables. Matching: ``overlap`` (the default: overlap of at
least ``--min_overlap`` of the shorter event, greedy by score) or ``iou`` (intersection
over union of at least ``--iou``, maximum one-to-one matching, as the DCASE few-shot
bioacoustic task scores).

From prediction logs, every combination of the event settings given (``--merge_gap``,
``--min_duration``, ``--smooth`` with ``--smooth_method``) is scored too: its event F1 is
printed and written to ``settings.csv``, so the settings that fit your annotations can go
to ``predict.py`` (default grid: merge gaps 0 0.5 1, minimum durations 0 0.25, smoothing
1 3 5). Where settings are given, the main table uses the first value of each.

Writes ``scores.csv``, ``scores.json``, ``settings.csv`` and (from logs) ``pr_curve.png``
(event-level precision-recall over thresholds) to --output_dir.
"""

import argparse
import itertools
import json
import logging
import os
import sys

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from .evaluation.events import Matching, csv_text, pr_curve, score, table_lines
from .evaluation.log_format import LogFormatError, parse_log
from .evaluation.raven import TableError, read_annotations
from .models.model_file import ModelFileError
from .prediction.decisions import DecisionRule, PostProcessing, model_rule
from .prediction.folder import PredictionFolder
from .utils import cli
from .utils.atomic import OutputError, atomic_write_text, make_folder
from .utils.config import ConfigError, read_config

PR_THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)]
GRID = {"merge_gap": [0.0, 0.5, 1.0], "min_duration": [0.0, 0.25], "smooth": [1, 3, 5]}
CONFIG_KEYS = ("predictions", "annotations", "output_dir", "label_column", "min_overlap", "threshold", "matching",
               "iou", "merge_gap", "min_duration", "smooth", "smooth_method")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Event-level precision, recall and F1 per class.")
    p.add_argument("config", nargs="?", help="a key=value config file instead of the flags (launcher style)")
    p.add_argument("--predictions", help="folder of predicted tables (*.selections.txt) or prediction logs")
    p.add_argument("--annotations", help="folder of annotated Raven selection tables")
    p.add_argument("--output_dir", help="where scores.csv, scores.json, settings.csv and pr_curve.png go")
    p.add_argument("--label_column", default="Sound type", help="the annotations' label column (default 'Sound type')")
    p.add_argument("--matching", default="overlap", choices=("overlap", "iou"),
                   help="overlap: fraction of the shorter event, greedy (default); iou: intersection over union, "
                        "maximum matching (DCASE)")
    p.add_argument("--min_overlap", type=float, default=0.5,
                   help="overlap rule: fraction of the shorter event needed for a match (default 0.5)")
    p.add_argument("--iou", type=float, default=0.3, help="iou rule: intersection over union needed (default 0.3)")
    p.add_argument("--threshold", default=None,
                   help="decision threshold for prediction logs (default: the run's own decisions; 'model': the "
                        "model's per-class thresholds)")
    p.add_argument("--merge_gap", type=float, nargs="+", default=None,
                   help="event settings to score from logs: merge gaps in seconds (default 0 0.5 1)")
    p.add_argument("--min_duration", type=float, nargs="+", default=None,
                   help="minimum event durations in seconds (default 0 0.25)")
    p.add_argument("--smooth", type=int, nargs="+", default=None,
                   help="windows of probability smoothing (default 1 3 5)")
    p.add_argument("--smooth_method", default="median", choices=("median", "mean"))
    return p


def _numbers(value, kind):
    return [kind(v) for v in str(value).replace(",", " ").split()] if isinstance(value, str) else value


def arguments(argv):
    args = build_parser().parse_args(argv)
    if args.config:
        config = read_config(args.config)
        for key in CONFIG_KEYS:
            if key in config:
                setattr(args, key, config[key])
        args.min_overlap, args.iou = float(args.min_overlap), float(args.iou)
        args.merge_gap, args.min_duration = _numbers(args.merge_gap, float), _numbers(args.min_duration, float)
        args.smooth = _numbers(args.smooth, int)
    missing = [k for k in ("predictions", "annotations", "output_dir") if not getattr(args, k)]
    if missing:
        raise ConfigError(f"missing: {', '.join('--' + k for k in missing)}")
    if not 0 < args.min_overlap <= 1:
        raise ConfigError(f"--min_overlap must be in (0, 1], not {args.min_overlap}")
    if not 0 < args.iou <= 1:
        raise ConfigError(f"--iou must be in (0, 1], not {args.iou}")
    if args.matching not in ("overlap", "iou"):
        raise ConfigError(f"matching must be overlap or iou, not {args.matching!r}")
    args.own_settings = args.merge_gap is None and args.min_duration is None and args.smooth is None
    grid = [args.merge_gap or GRID["merge_gap"], args.min_duration or GRID["min_duration"],
            args.smooth or GRID["smooth"]]
    args.settings = [PostProcessing(gap, duration, smooth, args.smooth_method)
                     for gap, duration, smooth in itertools.product(*grid)]
    return args


def rule_for(threshold, folder: PredictionFolder, log) -> DecisionRule:
    """The rule a log is decided with: ``--threshold`` (a number or ``model``), else the run's."""
    if threshold is None:
        return folder.rule(log)
    if str(threshold).strip().lower() == "model":
        return model_rule(log)
    return DecisionRule(float(threshold))


def detections_of(folder: PredictionFolder, outputs, threshold, post):
    """recording -> its detections (noise left out), by the folder's rule: its logs decided
    with ``threshold`` and ``post`` (None: the run's), else its table."""
    detections = {}
    for found in outputs.values():
        rule = rule_for(threshold, folder, parse_log(next(iter(found.logs.values())))) if found.logs else None
        detections[found.stem] = [e for e in folder.events(found, rule, post) if e.label.lower() != "noise"]
    return detections


def settings_table(args, folder, logs, annotations, matching: Matching):
    """Event F1 (all classes) for every combination of the event settings (logs only)."""
    rows = []
    for post in args.settings:
        found = detections_of(folder, logs, args.threshold, post)
        total = score(found, {r: a for r, a in annotations.items() if r in found}, matching).total().figures()
        rows.append((post, total))
    return rows


def run(args, log: logging.Logger) -> int:
    annotations = read_annotations(args.annotations, args.label_column)
    folder = PredictionFolder(args.predictions)
    outputs = folder.outputs()
    if not outputs:
        raise FileNotFoundError(f"--predictions {args.predictions}: no selection tables or prediction logs")
    matching = Matching(args.matching, args.min_overlap, args.iou)
    main_post = None if args.own_settings else args.settings[0]
    detections = detections_of(folder, outputs, args.threshold, main_post)
    scores = score(detections, annotations, matching,
                   lambda r: log.info(f"{r}: predicted but not annotated; its detections count as false positives"))
    print(f"Matching: {matching.describe()}")
    for line in table_lines(scores):
        print(line)
    make_folder(args.output_dir)
    atomic_write_text(os.path.join(args.output_dir, "scores.csv"), csv_text(scores))
    atomic_write_text(os.path.join(args.output_dir, "scores.json"),
                      json.dumps(dict(scores.to_json(), matching=vars(matching)), indent=2))
    logs = {key: found for key, found in outputs.items() if found.logs}
    if logs:
        lines = ["merge_gap,min_duration,smooth,smooth_method,tp,fp,fn,precision,recall,f1"]
        print("Event F1 per setting (prediction logs):")
        for post, f in settings_table(args, folder, logs, annotations, matching):
            f1 = "-" if f["f1"] is None else f"{100 * f['f1']:.1f}%"
            print(f"  merge_gap {post.merge_gap:g} s, min_duration {post.min_duration:g} s, smooth {post.smooth} "
                  f"({post.smooth_method}): F1 {f1}")
            lines.append(",".join(str(v) if v is not None else "" for v in (
                post.merge_gap, post.min_duration, post.smooth, post.smooth_method, f["tp"], f["fp"], f["fn"],
                f["precision"], f["recall"], f["f1"])))
        atomic_write_text(os.path.join(args.output_dir, "settings.csv"), "\n".join(lines) + "\n")
    if logs and str(args.threshold).strip().lower() != "model":
        curve = {}
        for threshold in PR_THRESHOLDS:
            part = score(detections_of(folder, logs, threshold, main_post),
                         {r: a for r, a in annotations.items() if r in {f.stem for f in logs.values()}}, matching)
            for label, counts in part.per_class.items():
                f = counts.figures()
                curve.setdefault(label, []).append((threshold, f["precision"], f["recall"]))
        annotated = {e.label for events in annotations.values() for e in events if e.label.lower() != "noise"}
        missing = pr_curve(curve, os.path.join(args.output_dir, "pr_curve.png"), sorted(annotated))
        if missing:
            log.info(f"pr_curve.png: {', '.join(missing)} not drawn (no detection at any threshold; named on the "
                     "figure)")
    return 0


def main(argv=None) -> int:
    return cli.run(lambda log: run(arguments(sys.argv[1:] if argv is None else argv), log), "ANIMAL-SPOT",
                   errors=(ConfigError, TableError, LogFormatError, ModelFileError, FileNotFoundError, OutputError,
                           ValueError))


if __name__ == "__main__":
    sys.exit(main())
