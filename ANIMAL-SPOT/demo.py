"""The README's first command (``make demo``): the whole workflow on a small synthetic set.

1. writes a seeded call set in the ANIMAL-SPOT naming (four call types with distinct
   shapes, one of them rare, and noise; several tapes per class),
2. trains ResNet-18 and ConvNeXt Tiny (from scratch) for a few epochs on the CPU,
3. prints both test per-class accuracy tables side by side,
4. predicts a generated 2-minute recording with the ResNet and writes its Raven table.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import main as train_main
from prediction.raven import evaluate
from utils.synthetic import make_call_set, make_recording

CLASSES = {"K1": 40, "K2": 40, "K3": 40, "K14": 12, "noise": 40}   # K14 is the rare call type
SHAPES = {"K1": "upsweep", "K2": "downsweep", "K3": "pulses", "K14": "harmonic", "noise": "noise"}
AUDIO = ["--sr", "16000", "--n_fft", "512", "--hop_length", "128", "--n_freq_bins", "64",
         "--fmin", "500", "--fmax", "7500", "--sequence_len", "500"]
MODELS = {
    "ResNet-18": ["--backbone", "resnet", "--max_pool", "2", "--lr", "1e-4", "--beta1", "0.5"],
    "ConvNeXt Tiny": ["--backbone", "convnext", "--lr", "3e-5", "--beta1", "0.9"],
}
ROW = re.compile(r"\|test\|0\|(\S+): (\S+) \(n=(\d+)\)")
MEAN = re.compile(r"\|test\|0\|mean per-class accuracy: (\S+)")
OVERALL = re.compile(r"Final test metric: (\S+)")


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def test_table(log_file: str) -> dict:
    rows = {}
    with open(log_file) as handle:
        for line in handle:
            match = ROW.search(line)
            if match:
                rows[match.group(1)] = f"{match.group(2)} (n={match.group(3)})"
            elif MEAN.search(line):
                rows["mean per class"] = MEAN.search(line).group(1)
            elif OVERALL.search(line):
                rows["accuracy"] = f"{100 * float(OVERALL.search(line).group(1)):.1f}%"
    return rows


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

    tables = {}
    for name, flags in MODELS.items():
        step(f"Training {name} for {args.epochs} epochs on the CPU")
        run = os.path.join(out, name.split()[0].lower().replace("-", ""))
        status = train_main.main(
            ["--data_dir", os.path.join(out, "data"), "--model_dir", os.path.join(run, "model"),
             "--checkpoint_dir", os.path.join(run, "checkpoints"), "--log_dir", os.path.join(run, "logs"),
             "--summary_dir", os.path.join(out, "summaries"), "--num_classes", str(len(CLASSES)),
             "--max_train_epochs", str(args.epochs), "--epochs_per_eval", "2", "--batch_size", "8",
             "--num_workers", "0", "--seed", "7", "--no_progress"] + AUDIO + flags)
        if status != 0:
            return status
        tables[name] = test_table(os.path.join(run, "logs", "TRAIN.log"))

    step("Test accuracy per class (best validation weights)")
    names = list(MODELS)
    print(f"{'class':<16}" + "".join(f"{n:>18}" for n in names))
    for cls in list(CLASSES) + ["mean per class", "accuracy"]:
        print(f"{cls:<16}" + "".join(f"{tables[n].get(cls, '-'):>18}" for n in names))

    step("Predicting a 2-minute recording with the ResNet-18 model")
    recording = os.path.join(out, "recording", "demo_recording.wav")
    placed = [("K1", 5), ("K2", 17.5), ("K3", 31), ("K14", 44), ("K1", 62), ("K3", 80.2), ("K2", 95), ("K14", 108)]
    events = [(SHAPES[c], t) for c, t in placed]
    make_recording(recording, 120, 16000, events, seed=11, call_len=0.5)
    prediction_dir = os.path.join(out, "prediction")
    console = os.path.join(prediction_dir, "console.txt")
    os.makedirs(prediction_dir, exist_ok=True)
    with open(console, "w") as handle:   # the per-window records go to the log, not the screen
        status = subprocess.call([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py"),
                                  "--model_path", os.path.join(out, "resnet18", "model", "ANIMAL-SPOT.pk"),
                                  "--input_file", recording, "--output_dir", prediction_dir,
                                  "--log_dir", prediction_dir, "--sequence_len", "0.5", "--hop", "0.25",
                                  "--threshold", "0.75", "--batch_size", "16", "--num_workers", "1",
                                  "--no_progress"],
                                 stderr=handle, stdout=handle)
    if status != 0:
        print(open(console).read()[-3000:])
        return status
    tables_written = evaluate(prediction_dir, os.path.join(out, "raven"), 0.75)
    with open(tables_written[0]) as handle:
        rows = handle.read().splitlines()
    print("Calls placed at (s): " + ", ".join(f"{c}@{t}" for c, t in placed))
    print(f"Raven selection table ({len(rows) - 1} detections):")
    for row in rows[:16]:
        print("  " + row.rstrip())

    step(f"Done in {time.time() - started:.0f} s")
    print(f"  TensorBoard:     tensorboard --logdir {os.path.join(out, 'summaries')}")
    print(f"  models:          {out}/resnet18/model/ANIMAL-SPOT.pk, {out}/convnext/model/ANIMAL-SPOT.pk")
    print(f"  training logs:   {out}/resnet18/logs/TRAIN.log, {out}/convnext/logs/TRAIN.log")
    print(f"  prediction log:  {prediction_dir}/demo_recording_predict_output.log")
    print(f"  Raven table:     {tables_written[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
