"""``--amp`` deciding as float32: the share of windows recomputed, and the time (a
benchmark, not a test).

    python bench/amp_bench.py [--seconds 120] [--epochs 6]

The setting of the issue that found the flips: a 4-class ResNet-18 trained for
``--epochs`` on an easy synthetic set (256 frequency bins, ``--max_pool 2``, min-max
normalisation), and a recording at a 0.25 s hop, predicted with and without ``--amp``
(bfloat16; on a CPU without native bfloat16 the bench still runs it, emulated, so the
share is measured everywhere but the time only means something on AVX512-BF16 / AMX
CPUs and GPUs). Prints the windows recomputed in float32, whether every decision and
Raven row equals float32's, and the times.
"""

import argparse
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
sys.path.insert(0, SRC)

import predict  # noqa: E402
from evaluation.log_format import parse_log  # noqa: E402
from utils import runtime  # noqa: E402
from utils.synthetic import make_call_set, make_recording  # noqa: E402

TEMPLATE = ["--sr", "44100", "--n_fft", "1024", "--hop_length", "172", "--n_freq_bins", "256", "--fmin", "500",
            "--fmax", "10000", "--sequence_len", "500"]


def main(argv=None) -> int:
    import io
    from contextlib import redirect_stderr

    import main as train_main

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args(argv)
    native = runtime.cpu_has_native_bf16()
    with tempfile.TemporaryDirectory(prefix="amp-bench-") as folder:
        make_call_set(os.path.join(folder, "data"), {"K1": 30, "K2": 30, "K3": 30, "noise": 30}, tapes_per_class=6,
                      sr=44100, duration=0.5, seed=3)
        assert train_main.main(["--data_dir", os.path.join(folder, "data"), "--model_dir", os.path.join(folder, "m"),
                                "--num_classes", "4", "--max_train_epochs", str(args.epochs), "--batch_size", "8",
                                "--num_workers", "0", "--seed", "1", "--no_progress", "--max_pool", "2",
                                "--min_max_norm", "--lr", "1e-4"] + TEMPLATE) == 0
        recording = os.path.join(folder, "rec.wav")
        calls = [(["upsweep", "downsweep", "pulses"][i % 3], 1.0 + 2.5 * i) for i in range(int(args.seconds / 2.5) - 1)]
        make_recording(recording, args.seconds, 44100, calls, seed=5, call_len=0.5)
        runtime.cpu_has_native_bf16 = lambda: True                 # emulated where not native
        seconds, logs = {}, {}
        for name, extra in (("float32", []), ("amp", ["--amp"])):
            out = os.path.join(folder, name)
            started = time.perf_counter()
            err = io.StringIO()
            with redirect_stderr(err):
                assert predict.main(["--model_path", os.path.join(folder, "m", "ANIMAL-SPOT.pk"), "--input_file",
                                     recording, "--output_dir", out, "--hop", "0.25", "--num_workers", "0",
                                     "--no_progress", "--raven", "--memory_format", "contiguous"] + extra) == 0
            seconds[name] = time.perf_counter() - started
            logs[name] = err.getvalue()
        share = re.search(r"--amp: (\d+) of (\d+) windows \(([\d.]+) %\)", logs["amp"])
        same = [(k, r.flag, r.label) for k, r in parse_log(os.path.join(folder, "float32", "rec_predict_output.log"))
                .windows.items()] == [(k, r.flag, r.label) for k, r in parse_log(
                    os.path.join(folder, "amp", "rec_predict_output.log")).windows.items()]
        tables = [open(os.path.join(folder, n, "rec.Table.1.selections.txt")).read() for n in ("float32", "amp")]
    print(f"--amp on a {args.seconds:.0f} s recording at a 0.25 s hop: {share.group(1)} of {share.group(2)} windows "
          f"({share.group(3)} %) recomputed in float32; decisions equal: {same}; Raven rows equal: "
          f"{tables[0] == tables[1]}")
    print(f"time: float32 {seconds['float32']:.1f} s, --amp {seconds['amp']:.1f} s "
          f"({'native bfloat16' if native else 'bfloat16 emulated on this CPU: the time says nothing about speed'})")
    print(f"machine: {runtime.machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
