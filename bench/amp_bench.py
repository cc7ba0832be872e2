"""``--amp``: what it chooses on this machine, how fast, and how often it decides otherwise
than float32 (a benchmark, not a test).

    python bench/amp_bench.py [--seconds 120] [--epochs 6]

The setting of the issue that found the flips: a 4-class ResNet-18 trained for
``--epochs`` on an easy synthetic set (256 frequency bins, ``--max_pool 2``, min-max
normalisation), and a recording at a 0.25 s hop, predicted with and without ``--amp``
(bfloat16; on a CPU without native bfloat16 the bench still runs it, emulated, so the
disagreement is measured everywhere but the time only means something on AVX512-BF16 /
AMX CPUs and GPUs). A second recording starts with 2.5 s of digital silence (the case
that broke the last round's error bound). Prints the precision the run kept, the sampled
disagreement the run reports, the disagreement over every window (both logs compared),
and the times.
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
        quiet = os.path.join(folder, "quiet.wav")
        make_recording(quiet, args.seconds, 44100, [(c, t + 2.5) for c, t in calls if t + 3.0 < args.seconds], seed=6,
                       call_len=0.5)
        import soundfile as sf
        audio, rate = sf.read(quiet, dtype="float32")
        audio[:int(2.5 * rate)] = 0.0
        sf.write(quiet, audio, rate)
        runtime.cpu_has_native_bf16 = lambda: True                 # emulated where not native
        for path in (recording, quiet):
            seconds, logs = {}, {}
            for name, extra in (("float32", []), ("amp", ["--amp"])):
                out = os.path.join(folder, name + os.path.basename(path))
                started = time.perf_counter()
                err = io.StringIO()
                with redirect_stderr(err):
                    assert predict.main(["--model_path", os.path.join(folder, "m", "ANIMAL-SPOT.pk"), "--input_file",
                                         path, "--output_dir", out, "--hop", "0.25", "--num_workers", "0",
                                         "--no_progress", "--raven"] + extra) == 0
                seconds[name] = time.perf_counter() - started
                logs[name] = (err.getvalue(), os.path.join(out, os.path.basename(path)[:-4] + "_predict_output.log"))
            chosen = re.search(r"Network on this machine: (.*)", logs["amp"][0])
            sampled = re.search(r"--amp: .*", logs["amp"][0])
            decided = [[(r.flag, r.label) for r in parse_log(logs[n][1]).windows.values()] for n in ("float32", "amp")]
            differing = sum(a != b for a, b in zip(*decided))
            print(f"{os.path.basename(path)} ({args.seconds:.0f} s, hop 0.25 s, {len(decided[0])} windows):")
            print(f"  trial: {chosen.group(1) if chosen else 'no trial line'}")
            print(f"  reported: {sampled.group(0) if sampled else 'nothing sampled (the run stayed float32)'}")
            print(f"  every window compared: {differing} of {len(decided[0])} decided otherwise "
                  f"({100 * differing / len(decided[0]):.2f} %)")
            print(f"  time: float32 {seconds['float32']:.1f} s, --amp {seconds['amp']:.1f} s "
                  f"({seconds['float32'] / seconds['amp']:.2f}x; "
                  f"{'native bfloat16' if native else 'bfloat16 emulated: the time says nothing about speed'})")
    print(f"machine: {runtime.machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
