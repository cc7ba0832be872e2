"""The README's first command (``make demo``): the whole workflow on a small synthetic set.

1. writes a seeded call set in the ANIMAL-SPOT naming (four call types with distinct
   shapes, one of them rare, and noise; several tapes per class),
2. trains ResNet-18 and ConvNeXt Tiny (from scratch) for a few epochs on the CPU,
3. prints both test tables side by side (per-class accuracy with 95 % intervals),
4. predicts a generated 2-minute recording with the ResNet, writes its Raven table in the
   same run (``--raven``) and scores it event by event against the calls it placed,
5. closes the review loop once: the review page (``review.py``) serves a stratified
   sample of the detections, a scripted reviewer who knows where the calls are answers
   through its HTTP interface, the summary gives precision, recall and call density with
   intervals, the verified selections become clips (``animal-spot clips``), the ResNet
   is retrained from itself on the old and new clips (``--transfer_from``), and both
   models predict a second recording: ``review loop: event F1 before X %, after Y %``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from . import main as train_main
from .evaluation.raven import Event, read_table
from .evaluation.events import score, table_lines
from .utils.atomic import OutputError, make_folder
from .utils.synthetic import make_call_set, make_recording

CLASSES = {"K1": 40, "K2": 40, "K3": 40, "K14": 12, "noise": 40}   # K14 is the rare call type
SHAPES = {"K1": "upsweep", "K2": "downsweep", "K3": "pulses", "K14": "harmonic", "noise": "noise"}
AUDIO = ["--sr", "16000", "--n_fft", "512", "--hop_length", "128", "--n_freq_bins", "64",
         "--fmin", "500", "--fmax", "7500", "--sequence_len", "500"]
MODELS = {
    "ResNet-18": ["--backbone", "resnet", "--max_pool", "2", "--lr", "1e-4", "--beta1", "0.5"],
    "ConvNeXt Tiny": ["--backbone", "convnext", "--lr", "3e-5", "--beta1", "0.9"],
}
PLACED = [("K1", 5), ("K2", 17.5), ("K3", 31), ("K14", 44), ("K1", 62), ("K3", 80.2), ("K2", 95), ("K14", 108)]
HELD_OUT = [("K14", 4), ("K2", 13), ("K1", 27.5), ("K3", 39), ("K14", 51), ("K2", 66), ("K1", 78), ("K3", 90)]
# a sound of the field that no training clip holds (a warble): the model calls some of it a call type until
# the reviewed recording's rejected detections teach it otherwise
DISTRACTOR = "warble"
DISTRACTED = [10, 24, 38, 52, 70, 88, 101, 114]
DISTRACTED_2 = [8, 20, 33, 45, 58, 72, 84, 95]


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


def predict(model: str, recording: str, folder: str, console: str) -> int:
    """``predict.py`` with the demo's settings (log and Raven table), output to ``console``."""
    with open(console, "w") as handle:   # the per-window records go to the log, not the screen
        return subprocess.call([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py"),
                                "--model_path", model, "--input_file", recording, "--output_dir", folder,
                                "--log_dir", folder, "--sequence_len", "0.5", "--hop", "0.25", "--threshold", "0.75",
                                "--batch_size", "16", "--num_workers", "1", "--raven", "--no_progress"],
                               stderr=handle, stdout=handle)


def event_f1(table_file: str, placed) -> float:
    name = os.path.basename(table_file).split(".", 1)[0]
    annotated = {name: [Event(name, t, t + 0.5, c) for c, t in placed]}
    return score({name: read_table(table_file)}, annotated, 0.5).total().figures()["f1"] or 0.0


def predict_and_score(out: str) -> int:
    """The 2-minute recording: prediction with its Raven table, then event-level scores."""
    step("Predicting a 2-minute recording with the ResNet-18 model (log and Raven table in one run)")
    recording = os.path.join(out, "recording", "demo_recording.wav")
    make_recording(recording, 120, 16000, [(SHAPES[c], t) for c, t in PLACED] + [(DISTRACTOR, t) for t in DISTRACTED],
                   seed=11, call_len=0.5)
    prediction_dir = os.path.join(out, "prediction")
    console = os.path.join(out, "prediction_console.txt")
    status = predict(os.path.join(out, "resnet18", "model", "ANIMAL-SPOT.pk"), recording, prediction_dir, console)
    if status != 0:
        print(open(console).read()[-3000:])
        return status
    table_file = os.path.join(prediction_dir, "demo_recording.Table.1.selections.txt")
    with open(table_file) as handle:
        rows = handle.read().splitlines()
    print("Calls placed at (s): " + ", ".join(f"{c}@{t}" for c, t in PLACED) + f"; {DISTRACTOR}s (no call) at "
          + ", ".join(str(t) for t in DISTRACTED))
    print(f"Raven selection table ({len(rows) - 1} selections):")
    for row in rows[:16]:
        print("  " + row.rstrip())
    step("Event-level scores against the placed calls (overlap >= 50 % of the shorter event)")
    annotated = {"demo_recording": [Event("demo_recording", t, t + 0.5, c) for c, t in PLACED]}
    for line in table_lines(score({"demo_recording": read_table(table_file)}, annotated, 0.5)):
        print("  " + line)
    return 0


def scripted_review(address: str, placed, per_class_report) -> None:
    """A reviewer who knows where the calls are, answering through the HTTP interface."""
    def call(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(address.rstrip("/") + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    answered = 0
    while True:
        item = call("/api/next?client=demo")
        if item["item"] is None:
            break
        truth = [c for c, t in placed                            # the selection holds most of a call
                 if min(item["end"], t + 0.5) - max(item["begin"], t) >= 0.5 * min(0.5, item["end"] - item["begin"])]
        if not truth:
            body = {"decision": "wrong"}
        elif truth[0] == item["class"]:
            body = {"decision": "correct"}
        else:
            body = {"decision": "other", "label": truth[0]}
        call("/api/decision", dict(body, item=item["item"], client="demo"))
        answered += 1
    summary = call("/api/summary")
    print(f"  {answered} items answered through the HTTP interface; review summary (95 % intervals):")
    per_class_report(summary)


def print_summary(summary) -> None:
    def figure(value, ci, percent=True):
        if value is None:
            return "n/a"
        scale = 100 if percent else 1
        text = f"{scale * value:.0f}{' %' if percent else ''}"
        return text + (f" [{scale * ci[0]:.0f}-{scale * ci[1]:.0f}]" if ci[0] is not None else "")
    for name, c in summary["classes"].items():
        density = figure(c["call_density_per_hour"], c["call_density_ci95"], False)
        print(f"    {name:<6} precision {figure(c['precision'], c['precision_ci95']):<16} recall "
              f"{figure(c['recall'], c['recall_ci95']):<16} calls/h {density}  ({c['reviewed']} reviewed"
              + ("; too few for firm figures)" if c["too_few_reviews"] else ")"))


def fine_tuning(flags):
    """The same settings at a tenth of the learning rate (4 epochs at the first run's rate
    undid what the model had learnt: event F1 100 % -> 57 % in this demo)."""
    flags = list(flags)
    flags[flags.index("--lr") + 1] = str(float(flags[flags.index("--lr") + 1]) / 10)
    return flags


def review_loop(out: str, epochs: int) -> int:
    """Predict -> review -> summary -> clips -> retrain -> predict (see the module's step 5)."""
    from . import clips as clip_command
    from . import review

    step("The review loop: a scripted reviewer answers the review page, the verified calls retrain the ResNet")
    model = os.path.join(out, "resnet18", "model", "ANIMAL-SPOT.pk")
    args = review.build_parser().parse_args(["--predictions", os.path.join(out, "prediction"), "--recordings",
                                             os.path.join(out, "recording"), "--out", os.path.join(out, "review"),
                                             "--model_path", model, "--per_class", "60", "--port", "0",
                                             "--target_precision", "0.9"])
    server, address = review.serve_in_thread(review.open_review(args))
    try:
        scripted_review(address, PLACED, print_summary)
    finally:
        server.shutdown()
    clips = os.path.join(out, "data_reviewed")
    shutil.copytree(os.path.join(out, "data"), clips)          # the clips and their split
    if clip_command.main(["--recordings", os.path.join(out, "recording"), "--annotations",
                          os.path.join(out, "review", "tables"), "--out", clips, "--rejected_as_noise", "--year",
                          "2024", "--tape", "REVIEW", "--into_partition", "train"]) != 0:
        return 1
    print(f"  verified selections written as training clips to {clips} (validation and test unchanged)")
    run = os.path.join(out, "resnet18_reviewed")
    if train_main.main(["--data_dir", clips, "--model_dir", os.path.join(run, "model"), "--log_dir",
                        os.path.join(run, "logs"), "--summary_dir", os.path.join(out, "summaries"), "--num_classes",
                        str(len(CLASSES)), "--max_train_epochs", str(epochs), "--epochs_per_eval", "2",
                        "--batch_size", "8", "--num_workers", "0", "--seed", "7", "--no_progress",
                        "--transfer_from", model] + AUDIO + fine_tuning(MODELS["ResNet-18"])) != 0:
        return 1
    recording = os.path.join(out, "recording_2", "demo_recording_2.wav")
    make_recording(recording, 100, 16000, [(SHAPES[c], t) for c, t in HELD_OUT] +
                   [(DISTRACTOR, t) for t in DISTRACTED_2], seed=12, call_len=0.5)
    figures = []
    for name, path in (("before", model), ("after", os.path.join(run, "model", "ANIMAL-SPOT.pk"))):
        folder = os.path.join(out, f"prediction_2_{name}")
        if predict(path, recording, folder, os.path.join(out, f"prediction_2_{name}.txt")) != 0:
            return 1
        figures.append(event_f1(os.path.join(folder, "demo_recording_2.Table.1.selections.txt"), HELD_OUT))
    print(f"review loop: event F1 before {100 * figures[0]:.1f} %, after {100 * figures[1]:.1f} %"
          "  (a second 100 s recording, overlap >= 50 %)")
    return 0


MARK = ".animal-spot-demo"
DEMO_NAMES = {"data", "data_reviewed", "prediction", "prediction_2_before", "prediction_2_after", "recording",
              "recording_2", "resnet18", "resnet18_reviewed", "review", "summaries", "convnext", "my_review", MARK}


def fresh_folder(out: str) -> None:
    """An empty ``--out`` (an earlier demo's folder is emptied; a folder holding anything
    else is refused, so a mistyped --out never loses data)."""
    if os.path.isdir(out) and os.listdir(out):
        if not all(name in DEMO_NAMES or name.startswith("prediction") for name in os.listdir(out)):
            raise OutputError(f"--out {out} holds files the demo did not write; choose an empty or new folder")
        shutil.rmtree(out)
    make_folder(out, "--out")
    with open(os.path.join(out, MARK), "w", encoding="utf-8") as handle:
        handle.write("written by ANIMAL-SPOT's demo: `make demo` empties this folder\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    started = time.time()
    try:
        fresh_folder(out)
    except OutputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    step(f"Writing a synthetic call set to {out}/data")
    make_call_set(os.path.join(out, "data"), CLASSES, tapes_per_class=10, sr=16000, duration=0.5, seed=7,
                  shapes=SHAPES)
    print(", ".join(f"{name}: {count} clips" for name, count in CLASSES.items()))
    if train_models(out, args.epochs) is None or predict_and_score(out) != 0 or review_loop(out, 4) != 0:
        return 1
    step(f"Done in {time.time() - started:.0f} s")
    if sys.prefix != sys.base_prefix:                    # the commands below need this environment in your shell
        print(f"  first, in each new shell: source {os.path.join(os.path.relpath(sys.prefix), 'bin', 'activate')}"
              "   (then: animal-spot --version)")
    print(f"  TensorBoard:     tensorboard --logdir {os.path.join(out, 'summaries')}")
    print(f"  models:          {out}/resnet18/model/ANIMAL-SPOT.pk, {out}/convnext/model/ANIMAL-SPOT.pk")
    print(f"  metrics:         {out}/resnet18/model/metrics.json")
    print(f"  training logs:   {out}/resnet18/logs/TRAIN.log, {out}/convnext/logs/TRAIN.log")
    print(f"  prediction:      {out}/prediction/ (log, Raven table)")
    print(f"  review:          {out}/review/ (journal, reviewed tables, summary); to review by hand:")
    print(f"                   animal-spot review --predictions {out}/prediction --recordings "
          f"{out}/recording --out {out}/my_review --model_path {out}/resnet18/model/ANIMAL-SPOT.pk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
