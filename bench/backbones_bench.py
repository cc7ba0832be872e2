"""Every registered backbone on one page (a benchmark, not a test): parameters, GFLOP per
0.5 s window at the template input (128 x 256), and CPU prediction real-time factor of
the network alone (batches of 16 template windows, 0.5 s hop: RTF = windows/s x 0.5),
in float32 and with ``--amp`` (bfloat16 where the processor has it).

``python bench/backbones_bench.py [--backbones NAME ...]``. Accuracy over seeds comes
from ``bench/compare_backbones.py``.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from models import backbones  # noqa: E402
from models.model_file import build_model, classifier_options  # noqa: E402
from prediction.backends import fuse_batchnorm  # noqa: E402
from utils.runtime import Precision, choose_memory_format, cpu_has_native_bf16  # noqa: E402

HOP_SECONDS = 0.5


def gflop(model) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 1, 128, 256))
    return counter.get_total_flops() / 1e9


def rtf(model, precision: Precision, repeats: int) -> float:
    x = torch.rand(16, 1, 128, 256)
    fmt = choose_memory_format(model, x, precision, torch.device("cpu"))
    x = x.contiguous(memory_format=torch.channels_last if fmt == "channels_last" else torch.contiguous_format)
    best = float("inf")
    with torch.inference_mode(), precision.autocast(torch.device("cpu")):
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return 16 / best * HOP_SECONDS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="*", default=list(backbones.REGISTRY))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    half = Precision(torch.bfloat16) if cpu_has_native_bf16() else Precision()
    rows = {}
    print(f"{'backbone':<20}{'params':>8}{'GFLOP':>8}{'RTF fp32':>10}{'RTF amp':>10}   ({half.name} for --amp, "
          f"{os.cpu_count()} threads)", flush=True)
    for name in args.backbones:
        entry = backbones.get(name)
        opts = {"backbone": name, **entry.defaults}
        torch.manual_seed(0)
        model = fuse_batchnorm(build_model(opts, classifier_options(opts, 5)).eval())
        row = {"parameters_m": sum(q.numel() for q in model.parameters()) / 1e6, "gflop": gflop(model),
               "rtf_float32": rtf(model, Precision(), args.repeats), "rtf_amp": rtf(model, half, args.repeats)}
        rows[name] = row
        print(f"{name:<20}{row['parameters_m']:>7.1f}M{row['gflop']:>8.2f}{row['rtf_float32']:>10.0f}"
              f"{row['rtf_amp']:>10.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
