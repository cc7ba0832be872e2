"""The README's first command (``make demo``): the whole workflow on a small synthetic set.

1. writes a seeded call set in the ANIMAL-SPOT naming (four call types with distinct
   shapes, one of them rare, and noise; several tapes per class),
2. trains ResNet-18 and ConvNeXt Tiny (from scratch) for a few epochs on the CPU,
3. prints both test tables side by side (per-class accuracy with 95 % intervals),
4. predicts a generated 2-minute recording with the ResNet, writes its Raven table in the
   same run (``--raven``) and scores it event by event against the calls it placed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import main as train_main
from evaluation.raven import Event, read_table
from evaluation.events import score, table_lines
from utils.synthetic import make_call_set, make_recording

CLASSES = {"K1": 40, "K2": 40, "K3": 40, "K14": 12, "noise": 40}   # K14 is the rare call type
SHAPES = {"K1": "upsweep", "K2": "downsweep", "K3": "pulses", "K14": "harmonic", "noise": "noise"}
AUDIO = ["--sr", "16000", "--n_fft", "512", "--hop_length", "128", "--n_freq_bins", "64",
         "--fmin", "500", "--fmax", "7500", "--sequence_len", "500"]
MODELS = {
    "ResNet-18": ["--backbone", "resnet", "--max_pool", "2", "--lr", "1e-4", "--beta1", "0.5"],
    "ConvNeXt Tiny": ["--backbone", "convnext", "--lr", "3e-5", "--beta1", "0.9"],
}
PLACED = [("K1", 5), ("K2", 17.5), ("K3", 31), ("K14", 44), ("K1", 62), ("K3", 80.2), ("K2", 95), ("K14", 108)]


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def test_table(metrics_file: str) -> dict:
    """Per class ``83.3% [43.6-97.0] (n=6)`` from a run's metrics.json."""
    with open(metrics_file) as handle:
        test = json.load(handle)["test"]
    rows = {}
    for name, entry in test["per_class"].items():
        if not entry["support"]:
            rows[name] = "n/a (n=0)"
            continue
        lo, hi = entry["recall_ci95"]
        rows[name] = f"{100 * entry['recall']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}] (n={entry['support']})"
    lo, hi = test["balanced_accuracy_ci95"]
    rows["balanced acc."] = f"{100 * test['balanced_accuracy']:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}]"
    rows["macro F1"] = f"{100 * test['macro_f1']:.1f}%"
    rows["accuracy"] = f"{100 * test['accuracy']:.1f}%"
    return rows


def train_models(out: str, epochs: int) -> dict:
    """Both backbones on the call set; their test tables (None when a run failed)."""
    tables = {}
    for name, flags in MODELS.items():
        step(f"Training {name} for {epochs} epochs on the CPU")
        run = os.path.join(out, name.split()[0].lower().replace("-", ""))
        status = train_main.main(
            ["--data_dir", os.path.join(out, "data"), "--model_dir", os.path.join(run, "model"),
             "--checkpoint_dir", os.path.join(run, "checkpoints"), "--log_dir", os.path.join(run, "logs"),
             "--summary_dir", os.path.join(out, "summaries"), "--num_classes", str(len(CLASSES)),
             "--max_train_epochs", str(epochs), "--epochs_per_eval", "2", "--batch_size", "8",
             "--num_workers", "0", "--seed", "7", "--no_progress"] + AUDIO + flags)
        if status != 0:
            return None
        tables[name] = test_table(os.path.join(run, "model", "metrics.json"))
    step("Test split per class: accuracy (recall) with its 95 % interval, best validation weights")
    print(f"{'class':<15}" + "".join(f"{n:>26}" for n in MODELS))
    for row in list(CLASSES) + ["balanced acc.", "macro F1", "accuracy"]:
        print(f"{row:<15}" + "".join(f"{tables[n].get(row, '-'):>26}" for n in MODELS))
    return tables


def predict_and_score(out: str) -> int:
    """The 2-minute recording: prediction with its Raven table, then event-level scores."""
    step("Predicting a 2-minute recording with the ResNet-18 model (log and Raven table in one run)")
    recording = os.path.join(out, "recording", "demo_recording.wav")
    make_recording(recording, 120, 16000, [(SHAPES[c], t) for c, t in PLACED], seed=11, call_len=0.5)
    prediction_dir = os.path.join(out, "prediction")
    console = os.path.join(out, "prediction_console.txt")
    with open(console, "w") as handle:   # the per-window records go to the log, not the screen
        status = subprocess.call([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py"),
                                  "--model_path", os.path.join(out, "resnet18", "model", "ANIMAL-SPOT.pk"),
                                  "--input_file", recording, "--output_dir", prediction_dir,
                                  "--log_dir", prediction_dir, "--sequence_len", "0.5", "--hop", "0.25",
                                  "--threshold", "0.75", "--batch_size", "16", "--num_workers", "1", "--raven",
                                  "--no_progress"], stderr=handle, stdout=handle)
    if status != 0:
        print(open(console).read()[-3000:])
        return status
    table_file = os.path.join(prediction_dir, "demo_recording.Table.1.selections.txt")
    with open(table_file) as handle:
        rows = handle.read().splitlines()
    print("Calls placed at (s): " + ", ".join(f"{c}@{t}" for c, t in PLACED))
    print(f"Raven selection table ({len(rows) - 1} selections):")
    for row in rows[:16]:
        print("  " + row.rstrip())
    step("Event-level scores against the placed calls (overlap >= 50 % of the shorter event)")
    annotated = {"demo_recording": [Event("demo_recording", t, t + 0.5, c) for c, t in PLACED]}
    for line in table_lines(score({"demo_recording": read_table(table_file)}, annotated, 0.5)):
        print("  " + line)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    started = time.time()
    if os.path.isdir(out):
        shutil.rmtree(out)
    step(f"Writing a synthetic call set to {out}/data")
    make_call_set(os.path.join(out, "data"), CLASSES, tapes_per_class=10, sr=16000, duration=0.5, seed=7,
                  shapes=SHAPES)
    print(", ".join(f"{name}: {count} clips" for name, count in CLASSES.items()))
    if train_models(out, args.epochs) is None or predict_and_score(out) != 0:
        return 1
    step(f"Done in {time.time() - started:.0f} s")
    print(f"  TensorBoard:     tensorboard --logdir {os.path.join(out, 'summaries')}")
    print(f"  models:          {out}/resnet18/model/ANIMAL-SPOT.pk, {out}/convnext/model/ANIMAL-SPOT.pk")
    print(f"  metrics:         {out}/resnet18/model/metrics.json")
    print(f"  training logs:   {out}/resnet18/logs/TRAIN.log, {out}/convnext/logs/TRAIN.log")
    print(f"  prediction:      {out}/prediction/ (log, Raven table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
