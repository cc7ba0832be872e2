"""Prediction speed and memory (a benchmark, not a test): ``make bench``.

Whole ``predict.py`` processes on a generated recording, timed side by side in one run
against the original's prediction path at the same settings (``original_predict``
below: the whole file in memory, one spectrogram per window in DataLoader workers,
float32 contiguous batches under ``no_grad``, the original's log lines), for ResNet-18
and ConvNeXt Tiny at the prediction template's audio settings (44.1 kHz, n_fft 1024,
hop 172, 256 bins, 0.5 s windows). Rows: ours in float32 and with ``--amp``. The
models are trained for a few epochs on a synthetic 44.1 kHz call set first, so the
probability comparison is made on trained models. Then peak memory on long recordings.
Real-time factor (RTF) = audio seconds per wall second.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
sys.path.insert(0, SRC)

import numpy as np  # noqa: E402

from evaluation.log_format import parse_log  # noqa: E402
from utils.synthetic import make_call_set, make_recording  # noqa: E402

TEMPLATE = ["--sr", "44100", "--n_fft", "1024", "--hop_length", "172", "--n_freq_bins", "256", "--fmin", "500",
            "--fmax", "10000", "--sequence_len", "500"]
MODELS = {"ResNet-18": ["--backbone", "resnet", "--max_pool", "2"], "ConvNeXt Tiny": ["--backbone", "convnext"]}

ORIGINAL = """
import sys, time, math
sys.path.insert(0, {src!r})
import torch
from torch.utils.data import DataLoader
from data.features import FeatureOptions
from data.recording import StridedAudioDataset, WindowGeometry
from models.model_file import load_model
torch.set_num_threads({threads})
start = time.perf_counter()
loaded = load_model({model!r})
options = FeatureOptions.from_data_opts(loaded.data_opts)
g = WindowGeometry.from_seconds({seq}, {hop}, options.sr, 0)
dataset = StridedAudioDataset({rec!r}, g.window, g.step, options=options)
names = {{i: n for n, i in loaded.classes.items()}}
lines = []
with torch.no_grad():
    for n, batch in enumerate(DataLoader(dataset, batch_size=16, num_workers=2, shuffle=False)):
        probs = torch.softmax(loaded.model(batch), dim=1)
        for i, p in enumerate(probs):
            c = int(p.argmax())
            lines.append(f"time={{n}}, pred_class={{names[c]}}-{{c}}, prob={{float(p[c])}}")
            lines.append("".join(f"{{names[k]}}={{float(p[k])}};" for k in range(len(p))))
print("SECONDS", time.perf_counter() - start)
print("\\n".join(lines))
"""


def peak_snippet(argv):
    return f"""
import sys
sys.path.insert(0, {SRC!r})
import predict
status = predict.main({argv!r})
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("PEAK_KB", int(line.split()[1]), status)
"""


def run(command, env=None):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command[:4])} ...\n{result.stderr[-3000:]}")
    return result, time.perf_counter() - start


def train(data: str, out: str, flags, epochs: int) -> str:
    command = [sys.executable, os.path.join(SRC, "main.py"), "--data_dir", data, "--model_dir", out,
               "--num_classes", "5", "--max_train_epochs", str(epochs), "--epochs_per_eval", "2", "--batch_size", "8",
               "--num_workers", "2", "--seed", "1", "--lr", "1e-4", "--no_progress", "--summary_dir",
               os.path.join(out, "tb")] + TEMPLATE + flags
    run(command)
    return os.path.join(out, "ANIMAL-SPOT.pk")


def ours(model, recording, out, seq, hop, amp, threads):
    command = [sys.executable, os.path.join(SRC, "predict.py"), "--model_path", model, "--input_file", recording,
               "--output_dir", out, "--sequence_len", str(seq), "--hop", str(hop), "--batch_size", "16",
               "--num_workers", "1", "--threshold", "0.5", "--no_progress", "--overwrite"] + (["--amp"] if amp else [])
    _, seconds = run(command, dict(os.environ, OMP_NUM_THREADS=str(threads)))
    log = parse_log(os.path.join(out, os.path.splitext(os.path.basename(recording))[0] + "_predict_output.log"))
    return seconds, np.array([w.probs for w in log.windows.values()])


def original(model, recording, seq, hop, threads):
    code = ORIGINAL.format(src=SRC, model=model, rec=recording, seq=seq, hop=hop, threads=threads)
    result, seconds = run([sys.executable, "-c", code])
    rows = [line.rstrip(";").split(";") for line in result.stdout.splitlines() if line.endswith(";")]
    return seconds, np.array([[float(v.split("=")[1]) for v in row] for row in rows])


def peak_mb(code: str) -> float:
    result, _ = run([sys.executable, "-c", code])
    return int([l for l in result.stdout.splitlines() if l.startswith("PEAK_KB")][-1].split()[1]) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="recording length for the speed runs")
    parser.add_argument("--sequence_len", type=float, default=0.5)
    parser.add_argument("--hop", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the benchmark models")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the paths, keep each one's best")
    parser.add_argument("--memory_minutes", type=float, nargs="*", default=[10, 60, 120])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    figures = {"cpu_threads": threads, "speed": {}, "memory_mb": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        make_call_set(data, {"K1": 24, "K2": 24, "K3": 24, "K14": 12, "noise": 24}, tapes_per_class=6, sr=44100,
                      duration=0.5, seed=3, shapes={"K1": "upsweep", "K2": "downsweep", "K3": "pulses",
                                                     "K14": "harmonic", "noise": "noise"})
        recording = os.path.join(tmp, "bench.wav")
        events = [(shape, 5.0 + 9.7 * i) for i, shape in enumerate(["upsweep", "pulses", "harmonic", "downsweep"] * 15)
                  if 5.0 + 9.7 * i < args.minutes * 60 - 1]
        make_recording(recording, args.minutes * 60, 44100, events, seed=1)
        audio = args.minutes * 60
        print(f"recording: {args.minutes:g} min at 44.1 kHz, {len(events)} calls; windows {args.sequence_len} s, "
              f"hop {args.hop} s; batch 16; {threads} threads", flush=True)
        for name in args.models:
            model = train(data, os.path.join(tmp, name.split()[0]), MODELS[name], args.epochs)
            best = {"original": float("inf"), "ours": float("inf"), "ours --amp": float("inf")}
            probs = {}
            for _ in range(args.repeats):
                seconds, probs["original"] = original(model, recording, args.sequence_len, args.hop, threads)
                best["original"] = min(best["original"], seconds)
                for label, amp in (("ours", False), ("ours --amp", True)):
                    seconds, probs[label] = ours(model, recording, os.path.join(tmp, "out"), args.sequence_len,
                                                 args.hop, amp, threads)
                    best[label] = min(best[label], seconds)
            row = {}
            for label in best:
                diff = np.abs(probs[label] - probs["original"])
                same = float((probs[label].argmax(1) == probs["original"].argmax(1)).mean())
                row[label] = {"rtf": audio / best[label], "speed_up": best["original"] / best[label],
                              "max_prob_diff": float(diff.max()), "same_class": same}
                print(f"{name:14s} {label:11s} RTF {audio / best[label]:7.1f}   x{best['original'] / best[label]:.2f} "
                      f"the original's   max |dp| {diff.max():.1e}   same class {100 * same:.2f}%  "
                      f"({len(probs[label])} windows)", flush=True)
            figures["speed"][name] = row
        model = os.path.join(tmp, "ResNet-18", "ANIMAL-SPOT.pk")
        for minutes in args.memory_minutes:
            rec = os.path.join(tmp, f"mem_{minutes:g}.wav")
            make_recording(rec, minutes * 60, 44100, [], seed=2)
            argv_ = ["--model_path", model, "--input_file", rec, "--output_dir", os.path.join(tmp, "mem"),
                     "--sequence_len", str(args.sequence_len), "--hop", "5.0", "--batch_size", "16",
                     "--num_workers", "1", "--no_progress", "--overwrite"]
            figures["memory_mb"][f"{minutes:g} min"] = mb = peak_mb(peak_snippet(argv_))
            print(f"peak memory of predict.py, {minutes:g} min recording: {mb:.0f} MB", flush=True)
            os.remove(rec)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
