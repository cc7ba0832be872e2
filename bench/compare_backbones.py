"""Compare training configurations fairly (a benchmark, not a test).

    python bench/compare_backbones.py DATA_DIR [--config NAME="main.py flags" ...] [--seeds 3]
        [--budget_minutes 60] [--out DIR] [-- common main.py flags]

Every configuration (a backbone and its options) is trained on the same split of
DATA_DIR (the first run makes it; the others reuse it) for each seed, and the test
figures are read from each run's metrics.json. The table gives mean +- standard
deviation over the seeds of accuracy, balanced accuracy, macro-F1, the recall of the
three rarest classes (by training files) and the training time. A difference smaller
than the spread, or measured on fewer than 3 seeds, is not a difference.
"""

import argparse
import json
import os
import re
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import main as train_main  # noqa: E402
from data.filenames import class_name  # noqa: E402

DEFAULT_CONFIGS = {
    "resnet": "--backbone resnet --max_pool 2 --lr 1e-4 --beta1 0.5",
    "convnext": "--backbone convnext --lr 3e-5 --beta1 0.9",
    "mobilenet_v3_large": "--backbone mobilenet_v3_large --lr 1e-4 --beta1 0.9",
    "efficientnet_b0": "--backbone efficientnet_b0 --lr 1e-4 --beta1 0.9",
}
RESNET = "--backbone resnet --max_pool 2 --lr 1e-4 --beta1 0.5 --augmentation --monitor balanced_accuracy"
AUGMENTATION_CONFIGS = {            # --preset augmentation: the original's augmentation, then each addition
    "original augmentation": RESNET,
    "+ spec_augment": RESNET + " --spec_augment",
    "+ mixup 0.2": RESNET + " --mixup 0.2",
    "+ background (noise class)": RESNET + " --background_from_noise_class",
    "+ all three": RESNET + " --spec_augment --mixup 0.2 --background_from_noise_class",
}
PRESETS = {"backbones": DEFAULT_CONFIGS, "augmentation": AUGMENTATION_CONFIGS}


def rarest_classes(data_dir: str, count: int = 3):
    files = []
    with open(os.path.join(data_dir, "train")) as index:
        for line in index:
            if line.strip():
                with open(os.path.join(data_dir, line.strip())) as rows:
                    files += [r.strip() for r in rows if r.strip()]
    counts = {}
    for f in files:
        counts[class_name(f)] = counts.get(class_name(f), 0) + 1
    return sorted(counts, key=lambda c: (counts[c], c))[:count]


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * mean:.1f} +- {100 * spread:.1f}"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--config", action="append", default=[], help='NAME="main.py flags" (repeatable)')
    p.add_argument("--preset", choices=sorted(PRESETS), default="backbones",
                   help="the configurations compared without --config (default backbones)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget_minutes", type=float, default=120, help="stop starting runs after this")
    p.add_argument("--out", default="bench_output/compare")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    configs = dict(c.split("=", 1) for c in args.config) if args.config else dict(PRESETS[args.preset])
    started, results = time.time(), {name: [] for name in configs}
    for seed in range(1, args.seeds + 1):
        for name, flags in configs.items():
            if time.time() - started > args.budget_minutes * 60:
                print(f"time budget spent: {name} seed {seed} not run", flush=True)
                continue
            run = os.path.join(args.out, re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + f"_seed{seed}")
            begin = time.time()
            status = train_main.main(["--data_dir", args.data_dir, "--model_dir", run, "--seed", str(seed),
                                      "--summary_dir", os.path.join(args.out, "tb"), "--no_progress"]
                                     + common + shlex.split(flags))
            if status != 0:
                print(f"{name} seed {seed} failed (exit {status})", flush=True)
                continue
            with open(os.path.join(run, "metrics.json")) as handle:
                metrics = json.load(handle)
            metrics["wall_seconds"] = time.time() - begin
            results[name].append(metrics)
    rare = rarest_classes(args.data_dir)
    header = ["configuration", "seeds", "accuracy %", "balanced acc. %", "macro-F1 %"] + \
        [f"recall {c} %" for c in rare] + ["train min"]
    rows = [header]
    for name, runs in results.items():
        tests = [r["test"] for r in runs]
        row = [name, str(len(runs)), summarise([t["accuracy"] for t in tests]),
               summarise([t["balanced_accuracy"] for t in tests]), summarise([t["macro_f1"] for t in tests])]
        row += [summarise([t["per_class"].get(c, {}).get("recall") for t in tests]) for c in rare]
        row.append(f"{statistics.mean([r['wall_seconds'] for r in runs]) / 60:.1f}" if runs else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({name: [{"test": r["test"], "seconds": r["wall_seconds"]} for r in runs]
                       for name, runs in results.items()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
