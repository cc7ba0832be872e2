"""Embedding store figures (a benchmark, not a test).

    python bench/embedding_bench.py [--vectors 1000000] [--head_windows 100000]

1. Throughput: whole ``embed.py`` and ``predict.py`` processes on the same 2-minute
   44.1 kHz recording with the same model (an untrained ResNet-18 at the template
   settings: speed does not depend on the weights), alternately, best of three each.
2. Search: ``--vectors`` random float16 vectors of 512 dimensions in a store (10 parts
   written in batches of 4096), one query, top 20 (the second search, with the vectors
   in the page cache), against every similarity in float32 (the earlier way) in the same run.
3. A linear head fitted on ``--head_windows`` stored windows of three classes.
Prints each figure with the machine.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
sys.path.insert(0, SRC)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.runtime import machine_description  # noqa: E402
from utils.synthetic import make_recording  # noqa: E402

TEMPLATE = {"sr": 44100, "n_fft": 1024, "hop_length": 172, "n_freq_bins": 256, "fmin": 500, "fmax": 10000}


def model_file(folder: str) -> str:
    from data.features import FeatureOptions
    from models.model_file import ModelSpec, classifier_options, save_model

    encoder = {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}
    spec = ModelSpec(encoder, classifier_options(encoder, 4), FeatureOptions(**TEMPLATE).data_opts(),
                     {"K1": 0, "K2": 1, "K3": 2, "noise": 3}, {"sequence_len": 500})
    torch.manual_seed(0)
    path = os.path.join(folder, "m.pk")
    save_model(path, spec.build().eval(), spec)
    return path


def throughput(folder: str) -> str:
    model = model_file(folder)
    recording = os.path.join(folder, "rec.wav")
    make_recording(recording, 120, 44100, [("upsweep", 10.0)], seed=1)
    common = ["--model_path", model, "--memory_format", "contiguous", "--batch_size", "16"]
    commands = {"predict.py": [sys.executable, os.path.join(SRC, "predict.py")] + common +
                ["--input_file", recording, "--output_dir", os.path.join(folder, "p"), "--hop", "0.5",
                 "--no_progress", "--num_workers", "0", "--overwrite"],
                "embed.py": [sys.executable, os.path.join(SRC, "embed.py")] + common +
                ["--input_file", recording, "--hop", "0.5"]}
    best = {name: float("inf") for name in commands}
    for round_ in range(3):
        for name, command in commands.items():
            if name == "embed.py":
                command = command + ["--store", os.path.join(folder, f"store{round_}")]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            best[name] = min(best[name], time.perf_counter() - started)
    return (f"throughput (2 min of 44.1 kHz audio, whole processes, best of 3): predict.py {best['predict.py']:.2f} s, "
            f"embed.py {best['embed.py']:.2f} s (embedding / prediction throughput "
            f"{best['predict.py'] / best['embed.py']:.2f})")


def search_speed(folder: str, count: int) -> str:
    from embedding import search as searching
    from embedding.store import PartMeta, Store, StoreDescription

    store = Store(os.path.join(folder, "big"))
    store.create(StoreDescription({"file": "random"}, {}, False, 512, 0.5, 0.5))
    rng = np.random.default_rng(0)
    per_part = count // 10
    for part in range(10):
        with store.writer(f"recording_{part}.wav", PartMeta()) as writer:
            for first in range(0, per_part, 4096):                 # in batches, as embed.py writes
                n = min(4096, per_part - first)
                starts = (first + np.arange(n)) * 0.5
                writer.add(starts, starts + 0.5, np.ones(n), rng.standard_normal((n, 512), dtype=np.float32))
    query = rng.standard_normal(512).astype(np.float32)
    query /= np.linalg.norm(query)
    times, baseline = [], []
    for _ in range(3):
        started = time.perf_counter()
        hits = searching.search(store, query, 20)
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        reference = searching.everything_float32(store, torch.from_numpy(query), 20, None)
        baseline.append(time.perf_counter() - started)
    same = [(h.recording, h.begin) for h in hits] == [(h.recording, h.begin) for h in reference]
    size = sum(os.path.getsize(p) for p in store.part_files()) / 1e9
    return (f"search over {count} vectors of 512 (float16, {size:.2f} GB on disk), top {len(hits)}: first "
            f"{times[0]:.2f} s, then {min(times[1:]):.2f} s; all in float32 (the earlier way) "
            f"{min(baseline[1:]):.2f} s: ratio {min(baseline[1:]) / min(times[1:]):.1f}; same hits: {same}")


def head_speed(windows: int) -> str:
    from embedding.heads import fit_head

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 512)) * 2
    labels = rng.integers(0, 3, windows)
    x = (centres[labels] + rng.standard_normal((windows, 512))).astype(np.float16).astype(np.float32)
    started = time.perf_counter()
    head = fit_head(x, labels, 3)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = float((head.head(torch.from_numpy(x[:10000])).argmax(1).numpy() == labels[:10000]).mean())
    return f"linear head fitted on {windows} windows of 512 in {seconds:.1f} s (training accuracy {accuracy:.3f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--head_windows", type=int, default=100_000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="embedding-bench-") as folder:
        print(throughput(folder), flush=True)
        print(search_speed(folder, args.vectors), flush=True)
        print(head_speed(args.head_windows), flush=True)
    print(f"machine: {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
