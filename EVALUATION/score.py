"""Event-level scores of predictions against annotated recordings.

    python EVALUATION/score.py --predictions DIR --annotations DIR --output_dir DIR \
        [--label_column "Sound type"] [--min_overlap 0.5] [--threshold 0.5]
    python EVALUATION/score.py EVALUATION/score_config          # the launcher style

Predictions: this project's ``*.selections.txt`` tables (``predict.py --raven``), or
prediction logs (decided with ``--threshold``; ``model`` = the model's per-class
thresholds); where a folder holds both for one recording, the table is used.
Annotations: Raven selection tables. Writes ``scores.csv``, ``scores.json`` and, from
logs, ``pr_curve.png`` (event-level precision-recall over thresholds) to --output_dir.
"""

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ANIMAL-SPOT"))

from models.model_file import ModelFileError  # noqa: E402
from prediction.annotations import (Event, TableError, events_by_recording, find_tables, read_annotations,  # noqa
                                    read_table, recording_name)
from prediction.events import csv_text, pr_curve, score, table_lines  # noqa: E402
from prediction.log_format import LogFormatError, parse_log  # noqa: E402
from prediction.raven import DecisionRule, model_rule, selections  # noqa: E402
from utils.atomic import OutputError, atomic_write_text  # noqa: E402
from utils.config import ConfigError, read_config  # noqa: E402

PR_THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Event-level precision, recall and F1 per class.")
    p.add_argument("config", nargs="?", help="a key=value config file instead of the flags (launcher style)")
    p.add_argument("--predictions", help="folder of predicted tables (*.selections.txt) or prediction logs")
    p.add_argument("--annotations", help="folder of annotated Raven selection tables")
    p.add_argument("--output_dir", help="where scores.csv, scores.json and pr_curve.png go")
    p.add_argument("--label_column", default="Sound type", help="the annotations' label column (default 'Sound type')")
    p.add_argument("--min_overlap", type=float, default=0.5,
                   help="overlap needed for a match, as a fraction of the shorter event (default 0.5)")
    p.add_argument("--threshold", default="0.5",
                   help="decision threshold for prediction logs (default 0.5; 'model': the model's thresholds)")
    return p


def arguments(argv):
    args = build_parser().parse_args(argv)
    if args.config:
        config = read_config(args.config)
        for key in ("predictions", "annotations", "output_dir", "label_column", "min_overlap", "threshold"):
            if key in config:
                setattr(args, key, config[key])
        args.min_overlap = float(args.min_overlap)
    missing = [k for k in ("predictions", "annotations", "output_dir") if not getattr(args, k)]
    if missing:
        raise ConfigError(f"missing: {', '.join('--' + k for k in missing)}")
    if not 0 < args.min_overlap <= 1:
        raise ConfigError(f"--min_overlap must be in (0, 1], not {args.min_overlap}")
    return args


def prediction_sources(folder: str):
    """recording -> ("table", path) or ("log", path); tables win."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--predictions {folder}: no such folder")
    sources = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.lower().endswith(".selections.txt") and not name.startswith("combined."):
                sources[recording_name(name)] = ("table", path)
            elif "_predict_output" in name and name.endswith(".log"):
                sources.setdefault(recording_name(name), ("log", path))
    if not sources:
        raise FileNotFoundError(f"--predictions {folder}: no selection tables or prediction logs")
    return sources


def log_events(path: str, rule: DecisionRule):
    log = parse_log(path)
    return [Event(recording_name(path), s.begin, s.end, s.name, None if s.score != s.score else s.score)
            for s in selections(log, rule)]


def rule_for(threshold, path):
    if str(threshold).strip().lower() == "model":
        return model_rule(parse_log(path))
    return DecisionRule(float(threshold))


def run(args, log: logging.Logger) -> int:
    annotations = read_annotations(args.annotations, args.label_column)
    sources = prediction_sources(args.predictions)
    detections = {}
    for recording, (kind, path) in sources.items():
        detections[recording] = (read_table(path, "Sound type", fallback_label=args.label_column) if kind == "table"
                                 else log_events(path, rule_for(args.threshold, path)))
    scores = score(detections, annotations, args.min_overlap,
                   lambda r: log.info(f"{r}: predicted but not annotated; its detections count as false positives"))
    for line in table_lines(scores):
        print(line)
    os.makedirs(args.output_dir, exist_ok=True)
    atomic_write_text(os.path.join(args.output_dir, "scores.csv"), csv_text(scores))
    atomic_write_text(os.path.join(args.output_dir, "scores.json"), json.dumps(scores.to_json(), indent=2))
    logs = {r: p for r, (kind, p) in sources.items() if kind == "log"}
    if logs and str(args.threshold).strip().lower() != "model":
        curve = {}
        for threshold in PR_THRESHOLDS:
            found = {r: log_events(p, DecisionRule(threshold)) for r, p in logs.items()}
            part = score(found, {r: a for r, a in annotations.items() if r in logs}, args.min_overlap)
            for label, counts in part.per_class.items():
                f = counts.figures()
                curve.setdefault(label, []).append((threshold, f["precision"], f["recall"]))
        pr_curve(curve, os.path.join(args.output_dir, "pr_curve.png"))
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s|%(levelname).1s|%(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("ANIMAL-SPOT")
    try:
        return run(arguments(sys.argv[1:] if argv is None else argv), log)
    except (ConfigError, TableError, LogFormatError, ModelFileError, FileNotFoundError, OutputError,
            ValueError) as error:
        log.error(str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
