"""Few labels: foundation-encoder embeddings with a few-shot head against full training (a
benchmark, not a test).

    python bench/agile.py DATA_DIR [--out bench_output/agile] [--draws 5] [--shots 1 5 20] [--pool mean max]
                          [--seeds 1 2 3] [--finetune_seeds 1 2 3 --finetune_arms plain schedule
                           --finetune_shots 0 20 --finetune_epochs 8]
    python bench/agile.py --speed [--minutes 2]

On a folder of labelled clips (the Watkins development set: 5 species), one split by tape
(70/15/15, fixed seed) serves every method; the clips are linked into ``--out`` (nothing
is written into DATA_DIR). For k labelled clips per species (``--shots``), drawn ``--draws``
times at random from the training partition:

* **BirdNET + linear head**: every clip embedded by BirdNET v2.4 (``embed.py --backbone
  birdnet``; a clip's vector is the mean (``--pool max``: maximum) of its 3 s windows, a shorter clip is one padded
  window), a linear head fitted on the k x species vectors (``embedding.heads``: standardised
  features, weight decay chosen by cross-validation over tapes where there are enough);
* **ResNet-18 + linear head**: the same with this project's ResNet-18 encoder, untrained
  (no ImageNet weights offline), on the spectrogram settings of the full training;
* **BirdNET fine-tuned** (``--finetune_seeds``): ``main.py --backbone birdnet`` on every
  training clip (``--finetune_shots 0``) or on k per species (the clips of the head's draw
  seed - 1), 3 s windows, Adam: head 1e-3, network 1e-4, best weights by balanced accuracy;
  arms (``--finetune_arms``): ``plain``, ``augmentation`` (waveform), ``spec_augment`` (masks
  on the front end's output), ``schedule`` (the head alone for 4 epochs with the network
  frozen, then the whole network from there: ``--freeze_backbone``, then ``--transfer_from``);
* **full training**: ``main.py`` from scratch on every training clip, with the settings the
  README's Watkins figures use (ResNet-18, lr 2e-5 x batch 8, 10 epochs, 22.05 kHz, n_fft
  512, hop 128, 128 bins, 500 ms, ``--augmentation``, best weights by balanced accuracy).

Every method is scored on the same test clips: balanced accuracy, macro one-vs-rest ROC AUC
and accuracy, as the
mean over draws with a 95 % Student t interval (full training: over ``--seeds``, and the
bootstrap interval of its test set), and the time each step takes.

``--speed``: embedding throughput of each encoder on a synthetic recording, in times real
time, next to ``predict.py``'s with a ResNet-18 model, on this machine's threads.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import embed  # noqa: E402
import main as train_main  # noqa: E402
from data.filenames import class_name, find_audio_files, tape_key  # noqa: E402
from data.split import get_split  # noqa: E402
from embedding import heads  # noqa: E402
from embedding.store import Store  # noqa: E402
from evaluation.intervals import mean_ci95  # noqa: E402
from evaluation.calibration import softmax  # noqa: E402
from evaluation.metrics import balanced_accuracy_of, confusion_of, macro_roc_auc  # noqa: E402
from utils import runtime  # noqa: E402

SPECTROGRAM = ["--sr", "22050", "--n_fft", "512", "--hop_length", "128", "--n_freq_bins", "128"]
FULL = SPECTROGRAM + ["--sequence_len", "500", "--batch_size", "8", "--lr", "2e-5", "--max_train_epochs", "10",
                      "--augmentation", "--monitor", "balanced_accuracy", "--num_workers", "2",
                      "--num_classes", "auto"]
# BirdNET fine-tuned by main.py (--backbone birdnet): the note's trial settings (Adam, head 1e-3, network 1e-4)
FINETUNE = ["--backbone", "birdnet", "--audio_window", "3", "--batch_size", "8", "--lr", "1.25e-4", "--backbone_lr",
            "1.25e-5", "--monitor", "balanced_accuracy", "--num_workers", "2", "--num_classes", "auto"]
ENCODERS = {"BirdNET + linear head": ["--backbone", "birdnet", "--hop", "3.0"],
            "ResNet-18 (untrained) + linear head": ["--backbone", "resnet"] + SPECTROGRAM +
            ["--fmin", "500", "--fmax", "10000", "--sequence_len", "0.5", "--hop", "0.5"]}


def link_clips(data_dir: str, work: str):
    """The clips linked below ``work`` and their split by tape (fixed seed)."""
    files = find_audio_files(data_dir)
    for relative in files:
        target = os.path.join(work, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.symlink(os.path.abspath(os.path.join(data_dir, relative)), target)
    return get_split(work, files, random.Random(1))


def clip_vectors(store: Store, pool: str = "mean"):
    """recording (clip path) -> the mean (or maximum) of its windows' vectors."""
    reduce = np.mean if pool == "mean" else np.max
    return {part.recording: reduce(np.asarray(part.vectors, np.float32), axis=0) for part in store.parts()}


def few_shot(vectors, split, shots, draws, names):
    """Balanced accuracy and accuracy of heads fitted on ``shots`` clips per class, per draw."""
    test = [f for f in split["test"] if f in vectors]
    x_test = np.stack([vectors[f] for f in test])
    y_test = np.asarray([names.index(class_name(f)) for f in test])
    by_class = {n: sorted(f for f in split["train"] if class_name(f) == n and f in vectors) for n in names}
    results = []
    for draw in range(draws):
        rng = random.Random(1000 * shots + draw)
        chosen = [f for n in names for f in rng.sample(by_class[n], min(shots, len(by_class[n])))]
        x = np.stack([vectors[f] for f in chosen])
        y = np.asarray([names.index(class_name(f)) for f in chosen])
        started = time.time()
        examples = heads.Examples(x, [names[i] for i in y], [tape_key(f) or f for f in chosen], np.zeros(len(y)))
        decay, _ = heads.choose_weight_decay(examples, y, len(names), None, 300, draw, "avg")
        head = heads.fit_head(x, y, len(names), weight_decay=decay, seed=draw)
        seconds = time.time() - started
        logits = heads.logits_of(head, x_test)
        predicted = logits.argmax(axis=1)
        matrix = confusion_of(y_test, predicted, len(names))
        results.append({"balanced_accuracy": balanced_accuracy_of(matrix),
                        "macro_roc_auc": macro_roc_auc(softmax(logits), y_test),
                        "accuracy": float((predicted == y_test).mean()), "fit_seconds": seconds, "decay": decay})
    return results


def interval_text(values):
    """Mean and Student t interval of proportions, in %, the interval kept within [0, 100]."""
    mean, (low, high) = mean_ci95(values)
    if low != low:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} [{100 * max(low, 0.0):.1f}, {100 * min(high, 1.0):.1f}]"


def run_agile(args) -> dict:
    work = os.path.abspath(args.out)
    data = os.path.join(work, "data")
    split = link_clips(args.data_dir, data)
    names = sorted({class_name(f) for f in split["train"]})
    print(f"split by tape: {', '.join(f'{p} {len(v)}' for p, v in split.items())} clips; classes {names}", flush=True)
    report = {"machine": runtime.machine_description(), "split": {p: len(v) for p, v in split.items()},
              "methods": {}}
    for method, flags in ENCODERS.items() if args.shots else ():
        store = os.path.join(work, "store_" + flags[1])
        started = time.time()
        assert embed.main(["--input_file", data, "--store", store] + flags) == 0
        embed_seconds = time.time() - started
        entry = {"embed_seconds": embed_seconds, "shots": {}}
        for pool in args.pool:
            vectors = clip_vectors(Store.existing(store), pool)
            for shots in args.shots:
                runs = few_shot(vectors, split, shots, args.draws, names)
                entry["shots"][f"{shots} {pool}"] = runs
                print(f"{method}, k={shots}, {pool} of windows: balanced accuracy "
                      f"{interval_text([r['balanced_accuracy'] for r in runs])} %, macro ROC AUC "
                      f"{interval_text([r['macro_roc_auc'] for r in runs])} %, accuracy "
                      f"{interval_text([r['accuracy'] for r in runs])} %, head fit "
                      f"{statistics.mean(r['fit_seconds'] for r in runs):.2f} s (embedding all clips: "
                      f"{embed_seconds:.0f} s)", flush=True)
        report["methods"][method] = entry
    full = []
    for seed in args.seeds:
        model_dir = os.path.join(work, f"full_seed{seed}")
        started = time.time()
        assert train_main.main(["--data_dir", data, "--model_dir", model_dir, "--seed", str(seed), "--summary_dir",
                                os.path.join(work, "tb"), "--no_progress"] + FULL) == 0
        with open(os.path.join(model_dir, "metrics.json")) as handle:
            test = json.load(handle)["test"]
        full.append({"balanced_accuracy": test["balanced_accuracy"], "macro_roc_auc": test["macro_roc_auc"],
                     "balanced_accuracy_ci95":
                     test["balanced_accuracy_ci95"], "accuracy": test["accuracy"], "seconds": time.time() - started})
        print(f"full training, seed {seed}: balanced accuracy {100 * test['balanced_accuracy']:.1f} % (bootstrap "
              f"{100 * test['balanced_accuracy_ci95'][0]:.1f}-{100 * test['balanced_accuracy_ci95'][1]:.1f}), "
              f"macro ROC AUC {100 * test['macro_roc_auc']:.1f} %, accuracy {100 * test['accuracy']:.1f} %, "
              f"{full[-1]['seconds'] / 60:.1f} min", flush=True)
    if full:
        report["methods"]["full training"] = full
    for shots in args.finetune_shots:
        for arm in args.finetune_arms:
            runs = []
            for seed in args.finetune_seeds:
                runs.append(fine_tune(args, work, data, split, names, arm, shots, seed))
            if runs:
                report["methods"][f"BirdNET fine-tuned ({arm}, {shots or 'all'} clips)"] = runs
                print(f"BirdNET fine-tuned ({arm}, k={shots or 'all'}): balanced accuracy "
                      f"{interval_text([r['balanced_accuracy'] for r in runs])} %, macro ROC AUC "
                      f"{interval_text([r['macro_roc_auc'] for r in runs])} %", flush=True)
    path = os.path.join(work, "agile.json")             # a later run adds its methods to the earlier runs'
    if os.path.isfile(path):
        with open(path) as handle:
            report["methods"] = {**json.load(handle).get("methods", {}), **report["methods"]}
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)
    return report


FROZEN_EPOCHS = 4           # the schedule arm: the head alone this long, then the whole network
ARMS = {"plain": [], "augmentation": ["--augmentation"], "spec_augment": ["--spec_augment"], "schedule": []}


def write_split(folder: str, split) -> None:
    """``split`` (partition -> data-relative paths) as the original's CSV and index files."""
    for partition, files in split.items():
        by_folder = {}
        for relative in files:
            by_folder.setdefault(os.path.dirname(relative), []).append(os.path.basename(relative))
        with open(os.path.join(folder, partition), "w") as index:
            for sub, names in sorted(by_folder.items()):
                with open(os.path.join(folder, sub, partition + ".csv"), "w") as rows:
                    rows.writelines(name + "\n" for name in names)
                index.write(os.path.join(sub, partition + ".csv") + "\n")


def shots_data(work: str, data: str, split, names, shots: int, seed: int) -> str:
    """A data folder whose training partition is ``shots`` clips per species, drawn as the
    linear head's draw ``seed - 1`` (the same clips), validation and test unchanged."""
    folder = os.path.join(work, f"data_k{shots}_draw{seed}")
    if os.path.isdir(folder):
        return folder
    rng = random.Random(1000 * shots + seed - 1)
    by_class = {n: sorted(f for f in split["train"] if class_name(f) == n) for n in names}
    chosen = {"train": [f for n in names for f in rng.sample(by_class[n], min(shots, len(by_class[n])))],
              "val": split["val"], "test": split["test"]}
    for relative in (f for files in chosen.values() for f in files):
        os.makedirs(os.path.dirname(os.path.join(folder, relative)), exist_ok=True)
        os.symlink(os.path.realpath(os.path.join(data, relative)), os.path.join(folder, relative))
    write_split(folder, chosen)
    return folder


def fine_tune(args, work: str, data: str, split, names, arm: str, shots: int, seed: int) -> dict:
    """One ``main.py --backbone birdnet`` run of ``arm`` on every training clip (shots 0) or
    on ``shots`` per species; the schedule arm trains the head alone first."""
    folder = shots_data(work, data, split, names, shots, seed) if shots else data
    model_dir = os.path.join(work, f"birdnet_{arm}_k{shots or 'all'}_seed{seed}")
    common = ["--data_dir", folder, "--seed", str(seed), "--no_progress", "--summary_dir", os.path.join(work, "tb")]
    started = time.time()
    if arm == "schedule":
        frozen = model_dir + "_frozen"
        assert train_main.main(common + ["--model_dir", frozen, "--max_train_epochs", str(FROZEN_EPOCHS),
                                         "--freeze_backbone"] + FINETUNE) == 0
        common += ["--transfer_from", os.path.join(frozen, "ANIMAL-SPOT.pk")]
    assert train_main.main(common + ["--model_dir", model_dir, "--max_train_epochs", str(args.finetune_epochs)]
                           + FINETUNE + ARMS[arm]) == 0
    with open(os.path.join(model_dir, "metrics.json")) as handle:
        test = json.load(handle)["test"]
    run = {"balanced_accuracy": test["balanced_accuracy"], "accuracy": test["accuracy"],
           "macro_roc_auc": test["macro_roc_auc"], "seconds": time.time() - started}
    low, high = test["balanced_accuracy_ci95"]
    print(f"BirdNET fine-tuned ({arm}, k={shots or 'all'}), seed {seed}: balanced accuracy "
          f"{100 * test['balanced_accuracy']:.1f} % (interval {100 * low:.1f}-{100 * high:.1f}), macro ROC AUC "
          f"{100 * test['macro_roc_auc']:.1f} %, accuracy {100 * test['accuracy']:.1f} %, "
          f"{run['seconds'] / 60:.1f} min", flush=True)
    return run


def run_speed(args) -> None:
    """Times real time of each encoder's embedding and of predict.py (ResNet-18) here."""
    from utils.synthetic import make_recording

    folder = tempfile.mkdtemp(prefix="agile_speed_")
    recording = os.path.join(folder, "rec", "season.wav")
    seconds = 60 * args.minutes
    make_recording(recording, seconds, 48000, [("upsweep", t) for t in range(5, int(seconds), 20)], seed=1)
    print(f"{runtime.machine_description()}, {torch.get_num_threads()} threads; {seconds:.0f} s recording at 48 kHz")
    for name, flags in (("BirdNET (3 s windows, hop 3 s)", ["--backbone", "birdnet", "--hop", "3.0"]),
                        ("batdetect2 (1 s windows, hop 1 s)", ["--backbone", "batdetect2", "--hop", "1.0"])):
        started = time.time()
        assert embed.main(["--input_file", os.path.dirname(recording), "--store", os.path.join(folder, flags[1]),
                           "--batch_size", "16"] + flags) == 0
        print(f"  {name}: {seconds / (time.time() - started):.0f}x real time (start-up included)", flush=True)
    from data.features import FeatureOptions
    from models.model_file import ModelSpec, classifier_options, save_model
    import predict

    encoder = {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}
    options = FeatureOptions(sr=44100, n_fft=1024, hop_length=172, n_freq_bins=256, fmin=500, fmax=10000)
    spec = ModelSpec(encoder, classifier_options(encoder, 4), options.data_opts(),
                     {"K1": 0, "K2": 1, "K3": 2, "noise": 3}, {"sequence_len": 500})
    model = os.path.join(folder, "resnet18.pk")
    save_model(model, spec.build().eval(), spec)
    started = time.time()
    assert predict.main(["--model_path", model, "--input_file", recording, "--output_dir", os.path.join(folder, "p"),
                         "--hop", "0.5", "--no_progress"]) == 0
    print(f"  predict.py, ResNet-18 (0.5 s windows, hop 0.5 s, the training scripts' settings): "
          f"{seconds / (time.time() - started):.0f}x real time", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", nargs="?")
    p.add_argument("--out", default="bench_output/agile")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--shots", type=int, nargs="*", default=[1, 5, 20])
    p.add_argument("--seeds", type=int, nargs="*", default=[1], help="seeds of full ResNet-18 trainings")
    p.add_argument("--pool", nargs="+", default=["mean"], choices=("mean", "max"),
                   help="how a clip's window vectors become the head's input")
    p.add_argument("--finetune_seeds", type=int, nargs="*", default=[], help="seeds (and draws) of BirdNET "
                                                                             "fine-tuned by main.py")
    p.add_argument("--finetune_arms", nargs="+", default=["plain", "augmentation"], choices=tuple(ARMS))
    p.add_argument("--finetune_shots", type=int, nargs="+", default=[0], help="clips per species (0: all)")
    p.add_argument("--finetune_epochs", type=int, default=8)
    p.add_argument("--speed", action="store_true")
    p.add_argument("--minutes", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.speed:
        run_speed(args)
        return 0
    if not args.data_dir:
        p.error("DATA_DIR is needed (or --speed)")
    run_agile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
