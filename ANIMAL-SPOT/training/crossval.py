"""Cross-validation by tape (``--folds K``).

The recordings (YEAR_TAPE groups) are dealt into K folds, stratified by class as far as
the tapes allow: tapes are taken largest first (in an order shuffled by the seed) and
each goes to the fold whose share of every class it brings stays closest to 1/K. Fold k
is the test partition of run k; its validation partition is one of
``round((1 - 1/K) / 0.15)`` groups dealt the same way from the remaining tapes (about
15 % of the data, as the original's split), and the rest trains. The assignment is
written once to ``model_dir/folds.json`` and reused, so a killed K-fold run continues
with the fold it was in; the data folder's own ``train``/``val``/``test`` index files are
neither read nor written.

Run k writes a normal run below ``fold_<k>/`` of the model, checkpoint, log and summary
folders. ``cv_summary.json`` holds, per class and overall, the mean over folds with its
95 % Student t interval (keys as in metrics.json: ``recall``, ``recall_ci95``,
``balanced_accuracy_ci95``, ...) and the figures pooled over every test clip.
"""

import json
import logging
import os
import random
from collections import Counter
from typing import Dict, List, Sequence

import numpy as np

from ..data.filenames import class_name, tape_key
from ..data.split import report_split
from ..evaluation.intervals import mean_ci95
from ..evaluation.metrics import METRICS, PassMetrics, pct
from ..utils.atomic import atomic_write_text
from ..utils.classmap import ClassMap

log = logging.getLogger("ANIMAL-SPOT")
VAL_SHARE = 0.15
FOLDS_FILE, SUMMARY_FILE = "folds.json", "cv_summary.json"
FOLD_FOLDERS = ("model_dir", "checkpoint_dir", "log_dir", "summary_dir")


def deal(groups: Dict[str, Counter], parts: int, rng: random.Random) -> List[List[str]]:
    """Groups (name -> class counts) dealt into ``parts`` lists, stratified by class."""
    totals: Counter = Counter()
    for counts in groups.values():
        totals.update(counts)
    order = sorted(groups)
    rng.shuffle(order)
    order.sort(key=lambda g: -sum(groups[g].values()))          # stable: largest first, ties shuffled
    shares = [Counter() for _ in range(parts)]
    dealt: List[List[str]] = [[] for _ in range(parts)]
    target = 1.0 / parts

    def cost(part: int, counts: Counter) -> float:
        return sum(((shares[part][c] + n) / totals[c] - target) ** 2 - (shares[part][c] / totals[c] - target) ** 2
                   for c, n in counts.items())
    for group in order:
        counts = groups[group]
        best = min(range(parts), key=lambda p: (cost(p, counts), sum(shares[p].values()), p))
        shares[best].update(counts)
        dealt[best].append(group)
    return dealt


def fold_splits(files: Sequence[str], k: int, seed: int) -> List[Dict[str, List[str]]]:
    """K splits ``{train, val, test}`` of ``files`` (data_dir-relative) by tape."""
    by_tape: Dict[str, List[str]] = {}
    for f in files:
        by_tape.setdefault(tape_key(f), []).append(f)
    if len(by_tape) < k:
        raise ValueError(f"--folds {k}: the data holds only {len(by_tape)} tape(s) (YEAR_TAPE groups); "
                         "use fewer folds")
    counts = {tape: Counter(class_name(f) for f in members) for tape, members in by_tape.items()}
    rng = random.Random(seed)
    folds = deal(counts, k, rng)
    val_parts = max(2, round((1 - 1 / k) / VAL_SHARE))
    splits = []
    for test_tapes in folds:
        rest = {t: c for t, c in counts.items() if t not in set(test_tapes)}
        val_tapes = deal(rest, min(val_parts, len(rest)), rng)[0]
        train_tapes = [t for t in rest if t not in set(val_tapes)]
        splits.append({name: sorted(f for t in tapes for f in by_tape[t])
                       for name, tapes in (("train", train_tapes), ("val", val_tapes), ("test", test_tapes))})
    return splits


def plan(config, files: Sequence[str], seed: int) -> List[Dict[str, List[str]]]:
    """The folds of this run: read from ``model_dir/folds.json``, or made and written."""
    path = os.path.join(config.model_dir, FOLDS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        if stored.get("folds") != config.folds:
            raise ValueError(f"{path} holds {stored.get('folds')} folds, not --folds {config.folds}: use another "
                             "--model_dir, or remove the folder to start again")
        log.info(f"Cross-validation: reusing the folds of {path}")
        return stored["splits"]
    splits = fold_splits(files, config.folds, seed)
    atomic_write_text(path, json.dumps({"folds": config.folds, "seed": seed, "splits": splits}, indent=1))
    return splits


def fold_config(config, k: int):
    """Run k's configuration: every output folder gets a ``fold_<k>`` sub-folder."""
    changes = {key: os.path.join(getattr(config, key), f"fold_{k}") for key in FOLD_FOLDERS if getattr(config, key)}
    return config.replace(**changes)


def report(split: Dict[str, List[str]], names: Sequence[str], k: int) -> None:
    sizes = ", ".join(f"{p} {len(split[p])}" for p in ("train", "val", "test"))
    log.info(f"Fold {k}: {sizes} clips")
    report_split(split, list(names))


# ------------------------------------------------------------------------- summary
def summarize(fold_tests: List[dict], names: Sequence[str]) -> dict:
    """Mean over folds with 95 % intervals, per fold figures, and the pooled figures, from
    each fold's ``metrics.json`` test summary."""
    overall = [m.name for m in METRICS if not m.per_class and m.table is not None] + ["accuracy"]
    per_class = [m.name for m in METRICS if m.per_class and m.table is not None]
    mean: dict = {}
    for key in overall:
        mean[key], mean[f"{key}_ci95"] = _mean([t.get(key) for t in fold_tests])
    mean["per_class"] = {}
    for name in names:
        entry = {}
        for key in per_class:
            entry[key], entry[f"{key}_ci95"] = _mean([t["per_class"][name].get(key) for t in fold_tests])
        mean["per_class"][name] = entry
    pooled = PassMetrics.from_confusion(np.sum([np.asarray(t["confusion_matrix"]) for t in fold_tests], axis=0),
                                        keep_samples=True)
    return {"folds": len(fold_tests), "classes": list(names), "mean": mean,
            "per_fold": [{key: t.get(key) for key in overall + ["samples"]} for t in fold_tests],
            "pooled": pooled.summary(list(names), intervals=True)}


def _mean(values):
    value, (lo, hi) = mean_ci95([v for v in values if v is not None])
    return (None if np.isnan(value) else value), [None if np.isnan(lo) else lo, None if np.isnan(hi) else hi]


def summary_lines(summary: dict) -> List[str]:
    """The log table: per class the mean recall over folds [interval] and the pooled recall."""
    k = summary["folds"]
    lines = [f"cross-validation over {k} folds by tape: mean over folds [95 % interval] | pooled over all test clips"]
    mean, pooled = summary["mean"], summary["pooled"]

    def interval(pair):
        return "" if pair[0] is None else f" [{100 * pair[0]:.1f}-{100 * pair[1]:.1f}]"
    for name in summary["classes"]:
        m, p = mean["per_class"][name], pooled["per_class"][name]
        lines.append(f"{name}: recall {pct(m['recall'])}{interval(m['recall_ci95'])} | {pct(p['recall'])} "
                     f"(n={p['support']})")
    for key in ("balanced_accuracy", "macro_f1", "accuracy"):
        lines.append(f"{key}: {pct(mean[key])}{interval(mean[f'{key}_ci95'])} | {pct(pooled[key])}")
    return lines


def write_summary(config, fold_tests: List[dict], class_map: ClassMap) -> dict:
    summary = summarize(fold_tests, class_map.names)
    atomic_write_text(os.path.join(config.model_dir, SUMMARY_FILE), json.dumps(summary, indent=2))
    for line in summary_lines(summary):
        log.info(line)
    return summary
