"""Prediction speed and memory (a benchmark, not a test): ``make bench``.

Real-time factor (audio seconds per wall second) of ``predict.py`` on a generated
recording against the straightforward per-window path measured in the same run (the
original's way: the whole file in memory, one spectrogram per window in DataLoader
workers, float32 contiguous batches of 16 under ``no_grad``), for ResNet-18 (no
max-pool) and ConvNeXt Tiny, with the prediction template's audio settings
(44.1 kHz, n_fft 1024, hop 172, 256 bins). Both paths' probabilities are compared.
Then the peak memory of ``predict.py`` (fresh process each) on recordings of 10 and 60
minutes, against the per-window path's.
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

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from data.audiodataset import StridedAudioDataset, window_geometry  # noqa: E402
from data.transforms import FeatureOptions  # noqa: E402
from models import backbones  # noqa: E402
from models.classifier import DefaultClassifierOpts  # noqa: E402
from models.model_file import build_model, load_model, save_model  # noqa: E402
from utils.synthetic import make_recording  # noqa: E402

DATA_OPTS = FeatureOptions(sr=44100, n_fft=1024, hop_length=172, n_freq_bins=256, fmin=500, fmax=10000).data_opts()
ENCODERS = {"ResNet-18": {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 2,
                          "resnet_size": 18},
            "ConvNeXt Tiny": {"backbone": "convnext", "input_channels": 1, "variant": "tiny"}}


def write_model(path: str, encoder_opts: dict) -> None:
    torch.manual_seed(0)
    classifier_opts = dict(DefaultClassifierOpts, num_classes=5,
                           input_channels=backbones.output_channels(encoder_opts))
    model = build_model(encoder_opts, classifier_opts).eval()
    classes = {name: i for i, name in enumerate(["K1", "K14", "K2", "K3", "noise"])}
    save_model(path, model, encoder_opts, classifier_opts, DATA_OPTS, classes, {"min_max_norm": False})


def per_window_baseline(model_path, recording, seq, hop, batch_size, workers):
    """The original's prediction path: returns (probabilities, seconds)."""
    start = time.perf_counter()
    loaded = load_model(model_path)
    options = FeatureOptions.from_data_opts(loaded.data_opts)
    window, step, _ = window_geometry(seq, hop, options.sr, 0)
    dataset = StridedAudioDataset(recording, window, step, options=options)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    probs = []
    with torch.no_grad():
        for batch in loader:
            probs.append(torch.softmax(loaded.model(batch), dim=1))
    return torch.cat(probs), time.perf_counter() - start


def quiet_predict():
    """``predict`` whose per-file records go to the log file only (not the console)."""
    import predict
    from utils import logging as log_utils

    def setup(name, log_dir=None, file_name="TRAIN.log", debug=False, console=True):
        return log_utils.setup_logger(name, log_dir, file_name, debug, console=False)
    predict.setup_logger = setup
    return predict


def ours(model_path, recording, seq, hop, batch_size, out_dir):
    """``predict.py`` itself, in this process: returns (probabilities from its log, seconds)."""
    predict = quiet_predict()
    start = time.perf_counter()
    status = predict.main(["--model_path", model_path, "--input_file", recording, "--output_dir", out_dir,
                           "--sequence_len", str(seq), "--hop", str(hop), "--batch_size", str(batch_size),
                           "--num_workers", "1", "--threshold", "0.5"])
    elapsed = time.perf_counter() - start
    assert status == 0
    probs = []
    stem = os.path.splitext(os.path.basename(recording))[0]
    with open(os.path.join(out_dir, f"{stem}_predict_output.log")) as handle:
        record = []
        for line in handle:
            if line.startswith("output_layer:"):
                record = []
            elif line.rstrip().endswith(";"):
                record.append(float(line.split("=")[1].rstrip().rstrip(";")))
                if len(record) == 5:
                    probs.append(record)
    return torch.tensor(probs), elapsed


PEAK = """
def peak_kb():  # high-water mark of this process (ru_maxrss would include the parent's, from fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""

PEAK_SNIPPET = PEAK + """
import sys
sys.path.insert(0, {src!r})
sys.path.insert(0, {bench!r})
from predict_bench import quiet_predict
status = quiet_predict().main({argv!r})
print("PEAK_KB", peak_kb(), status)
"""

BASELINE_PEAK_SNIPPET = PEAK + """
import sys
sys.path.insert(0, {src!r})
import torch
from torch.utils.data import DataLoader
from data.audiodataset import StridedAudioDataset, window_geometry
from data.transforms import FeatureOptions
from models.model_file import load_model
loaded = load_model({model!r})
options = FeatureOptions.from_data_opts(loaded.data_opts)
window, step, _ = window_geometry({seq}, {hop}, options.sr, 0)
ds = StridedAudioDataset({rec!r}, window, step, options=options)
with torch.no_grad():
    for batch in DataLoader(ds, batch_size=16, num_workers=0):
        loaded.model(batch)
print("PEAK_KB", peak_kb(), 0)
"""


def peak_mb(code: str) -> float:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [l for l in result.stdout.splitlines() if l.startswith("PEAK_KB")][-1]
    return int(line.split()[1]) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="recording length for the speed runs")
    parser.add_argument("--sequence_len", type=float, default=0.5)
    parser.add_argument("--hop", type=float, default=0.5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--baseline_workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two paths, keep each one's best")
    parser.add_argument("--memory_minutes", type=float, nargs="*", default=[10, 60, 120])
    parser.add_argument("--memory_hop", type=float, default=5.0, help="hop for the memory runs (fewer windows)")
    parser.add_argument("--models", nargs="*", default=list(ENCODERS))
    parser.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    figures = {"threads": torch.get_num_threads(), "speed": {}, "memory_mb": {}}
    with tempfile.TemporaryDirectory() as tmp:
        recording = os.path.join(tmp, "bench.wav")
        make_recording(recording, args.minutes * 60, 44100, [("upsweep", 3.0), ("pulses", 30.0)], seed=1)
        audio_seconds = args.minutes * 60
        print(f"recording: {args.minutes:g} min at 44.1 kHz; windows {args.sequence_len} s, hop {args.hop} s; "
              f"torch threads {torch.get_num_threads()}", flush=True)
        for name in args.models:
            model_path = os.path.join(tmp, f"{name.split()[0]}.pk")
            write_model(model_path, ENCODERS[name])
            base_time = our_time = float("inf")
            for _ in range(args.repeats):
                base_probs, seconds = per_window_baseline(model_path, recording, args.sequence_len, args.hop,
                                                          args.batch_size, args.baseline_workers)
                base_time = min(base_time, seconds)
                our_probs, seconds = ours(model_path, recording, args.sequence_len, args.hop, args.batch_size,
                                          os.path.join(tmp, "out"))
                our_time = min(our_time, seconds)
            diff = float((our_probs - base_probs).abs().max())
            row = {"baseline_rtf": audio_seconds / base_time, "ours_rtf": audio_seconds / our_time,
                   "speed_up": base_time / our_time, "max_prob_diff": diff, "windows": int(base_probs.shape[0])}
            figures["speed"][name] = row
            print(f"{name:14s} per-window RTF {row['baseline_rtf']:7.2f}   ours RTF {row['ours_rtf']:7.2f}   "
                  f"speed-up {row['speed_up']:.2f}x   max |dp| {diff:.2e}   ({row['windows']} windows)", flush=True)
        model_path = os.path.join(tmp, "ResNet-18.pk")
        write_model(model_path, ENCODERS["ResNet-18"])
        for minutes in args.memory_minutes:
            rec = os.path.join(tmp, f"mem_{minutes:g}.wav")
            make_recording(rec, minutes * 60, 44100, [], seed=2)
            argv_ = ["--model_path", model_path, "--input_file", rec, "--output_dir", os.path.join(tmp, "mem"),
                     "--sequence_len", str(args.sequence_len), "--hop", str(args.memory_hop),
                     "--batch_size", str(args.batch_size), "--num_workers", "1"]
            our_peak = peak_mb(PEAK_SNIPPET.format(src=SRC, bench=os.path.dirname(os.path.abspath(__file__)),
                                                   argv=argv_))
            base_peak = peak_mb(BASELINE_PEAK_SNIPPET.format(src=SRC, model=model_path, rec=rec,
                                                             seq=args.sequence_len, hop=args.memory_hop))
            figures["memory_mb"][f"{minutes:g} min"] = {"ours": our_peak, "per_window": base_peak}
            print(f"peak memory, {minutes:g} min recording: ours {our_peak:.0f} MB, per-window path "
                  f"{base_peak:.0f} MB", flush=True)
            os.remove(rec)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
