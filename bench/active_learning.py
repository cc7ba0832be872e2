"""Active learning against random sampling (a benchmark, not a test).

    python bench/active_learning.py [--seeds 3] [--model M.pk]

The task of the embedding issue: a call type the model never heard (a "warble"), rare in a
season, to be found with a head on the stored embeddings. A ResNet-18 is trained on the
demo's four call types (or ``--model``); three 5-minute recordings hold 10 warbles and
60 other calls each; every window is embedded (0.5 s, hop 0.25 s). Starting from the
same 2 warble windows and 8 random windows, a reviewer who knows the truth labels 10
windows per round, chosen at random or by the active learner's rule (the most uncertain
windows, a minute apart, ``embedding.active.choose``); after each round a linear head is
fitted and the warbles it detects are scored event by event (overlap >= 50 %) against
the planted ones. Prints event F1 against windows reviewed (mean over seeds), and how
many windows the active learner needs to reach the F1 random sampling reaches with N.
"""

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
sys.path.insert(0, SRC)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from embedding.active import choose  # noqa: E402
from embedding.heads import fit_head, logits_of  # noqa: E402
from embedding.store import Store  # noqa: E402
from evaluation.events import score  # noqa: E402
from evaluation.raven import Event  # noqa: E402
from utils.runtime import machine_description  # noqa: E402
from utils.synthetic import make_call_set, make_recording  # noqa: E402

AUDIO = ["--sr", "16000", "--n_fft", "512", "--hop_length", "128", "--n_freq_bins", "64", "--fmin", "500",
         "--fmax", "7500", "--sequence_len", "500"]
ROUND, LIMIT = 10, 200


def train(folder: str) -> str:
    import main as train_main

    classes = {"K1": 40, "K2": 40, "K3": 40, "K14": 12, "noise": 40}
    shapes = {"K1": "upsweep", "K2": "downsweep", "K3": "pulses", "K14": "harmonic", "noise": "noise"}
    make_call_set(os.path.join(folder, "data"), classes, tapes_per_class=10, sr=16000, duration=0.5, seed=7,
                  shapes=shapes)
    assert train_main.main(["--data_dir", os.path.join(folder, "data"), "--model_dir", os.path.join(folder, "m"),
                            "--num_classes", "5", "--max_train_epochs", "12", "--epochs_per_eval", "2",
                            "--batch_size", "8", "--num_workers", "0", "--seed", "7", "--no_progress",
                            "--backbone", "resnet", "--max_pool", "2", "--lr", "1e-4"] + AUDIO) == 0
    return os.path.join(folder, "m", "ANIMAL-SPOT.pk")


def season(folder: str, model: str):
    import embed

    rng = np.random.default_rng(3)
    planted = {}
    for r in range(3):
        times = np.sort(rng.choice(np.arange(2, 296, 2.5), 70, replace=False))
        shapes = ["warble"] * 10 + ["upsweep", "downsweep", "pulses"] * 20
        rng.shuffle(shapes)
        calls = list(zip(shapes, times.tolist()))
        make_recording(os.path.join(folder, "season", f"r{r}.wav"), 300, 16000, calls, seed=r, call_len=0.5)
        planted[f"r{r}.wav"] = [t for s, t in calls if s == "warble"]
    assert embed.main(["--model_path", model, "--input_file", os.path.join(folder, "season"), "--store",
                       os.path.join(folder, "store"), "--hop", "0.25", "--memory_format", "contiguous"]) == 0
    store = Store.existing(os.path.join(folder, "store"))
    parts = list(store.parts())
    vectors = np.concatenate([np.asarray(p.vectors, dtype=np.float32) for p in parts])
    where = [(p.recording, float(s), float(e)) for p in parts for s, e in zip(p.starts, p.ends)]
    truth = np.asarray([any(min(e, t + 0.5) - max(s, t) >= 0.25 for t in planted[r]) for r, s, e in where])
    return vectors, where, truth, planted


def event_f1(probs: np.ndarray, where, planted) -> float:
    detections = {}
    for (recording, start, end), p in zip(where, probs):
        if p < 0.5:
            continue
        events = detections.setdefault(recording, [])
        if events and events[-1].end >= start:
            events[-1] = Event(recording, events[-1].begin, end, "warble")
        else:
            events.append(Event(recording, start, end, "warble"))
    annotated = {r: [Event(r, t, t + 0.5, "warble") for t in times] for r, times in planted.items()}
    for r in annotated:
        detections.setdefault(r, [])
    return score(detections, annotated, 0.5).total().figures()["f1"] or 0.0


def curve(vectors, where, truth, planted, seed: int, active: bool):
    rng = np.random.default_rng(seed)
    labelled = list(rng.choice(np.flatnonzero(truth), 2, replace=False)) + \
        list(rng.choice(np.flatnonzero(~truth), 8, replace=False))
    points = []
    while True:
        y = truth[labelled].astype(int)
        head = fit_head(vectors[labelled], y, 2, epochs=100, seed=seed)
        probs = torch.softmax(torch.from_numpy(logits_of(head, vectors)), dim=1)[:, 1].numpy()
        points.append((len(labelled), event_f1(probs, where, planted)))
        if len(labelled) >= LIMIT:
            return points
        taken = set(labelled)
        rest = [i for i in range(len(vectors)) if i not in taken]
        if active:
            candidates = [(1 - abs(probs[i] - 0.5) * 2, where[i][0], where[i][1], where[i][2],
                           "warble" if probs[i] >= 0.5 else "other", float(probs[i])) for i in rest]
            picked = choose(sorted(candidates, key=lambda c: -c[0])[:500], ROUND)
            index = {(w[0], w[1]): i for i, w in enumerate(where)}
            labelled += [index[(c[1], c[2])] for c in picked]
        else:
            labelled += list(rng.choice(rest, ROUND, replace=False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--model", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="active-bench-") as folder:
        model = args.model or train(folder)
        vectors, where, truth, planted = season(folder, model)
        results = {"random": [], "active": []}
        for seed in range(1, args.seeds + 1):
            for name in results:
                results[name].append(curve(vectors, where, truth, planted, seed, name == "active"))
    print(f"{len(vectors)} windows, {int(truth.sum())} of them on a warble; event F1 (mean over {args.seeds} seeds):")
    print("| windows reviewed | random | active |\n| --- | --- | --- |")
    sizes = [n for n, _ in results["random"][0]]
    mean = {name: [float(np.mean([c[i][1] for c in runs])) for i in range(len(sizes))]
            for name, runs in results.items()}
    for i, n in enumerate(sizes):
        if n in (10, 20, 30, 40, 60, 80, 100, 140, 200):
            print(f"| {n} | {100 * mean['random'][i]:.1f} % | {100 * mean['active'][i]:.1f} % |")
    for target_n in (40, 100, 200):
        target = mean["random"][sizes.index(target_n)]
        reached = next((n for n, f in zip(sizes, mean["active"]) if f >= target), None)
        print(f"random sampling reaches {100 * target:.1f} % with {target_n} windows; active learning with "
              f"{reached if reached is not None else f'more than {LIMIT}'}")
    print(f"machine: {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
