"""BirdNET's embedding on the CPU: the published LiteRT model against the PyTorch network
converted from it (float32, channels-last, and bfloat16 where the processor has it natively),
same windows, same run; and training steps of
the PyTorch network (forward and backward, batch 8). Prints real-time factors.

    python bench/birdnet_bench.py [--minutes 10] [--threads 2]
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import as_package  # noqa: E402

as_package.register()
from animal_spot.models import birdnet, foundation  # noqa: E402
from animal_spot.utils import runtime  # noqa: E402


def timed(run, batches):
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    windows = int(args.minutes * 60 / 3)
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((windows, 144000)).astype(np.float32) * 0.1)
    batches = [audio[i:i + args.batch] for i in range(0, windows, args.batch)]
    seconds = windows * 3.0
    lite = foundation.BirdNetEncoder({})
    network, _ = birdnet.pretrained()
    network.eval()

    def torch_run(precision, layout=torch.contiguous_format):
        def run(batch):
            network.to(memory_format=layout)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                network(batch)
        return run
    lite(batches[0])                                     # warm-up of each path
    torch_run("float32")(batches[0])
    print(f"BirdNET embedding, {args.minutes:g} min of audio ({windows} windows of 3 s), {args.threads} thread(s), "
          f"batch {args.batch}; native bfloat16: {runtime.cpu_has_native_bf16()}")
    base = timed(lite, batches)
    print(f"  LiteRT (published model)      {seconds / base:7.1f}x real time")
    variants = [("float32", torch.contiguous_format), ("float32", torch.channels_last)]
    if runtime.cpu_has_native_bf16():                  # emulated bfloat16 is many times slower: not timed
        variants += [("bfloat16", torch.contiguous_format), ("bfloat16", torch.channels_last)]
    for precision, layout in variants:
        took = timed(torch_run(precision, layout), batches)
        name = f"{precision}{', channels-last' if layout == torch.channels_last else ''}"
        print(f"  PyTorch {name:<23} {seconds / took:7.1f}x real time ({base / took:.2f} of LiteRT's speed)")
    network.to(memory_format=torch.contiguous_format)
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-4)
    batch = audio[:8]
    steps, started = 5, time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        embedding, _ = network(batch)
        embedding.pow(2).mean().backward()
        optimizer.step()
    took = time.perf_counter() - started
    print(f"  training (whole network, batch 8, float32): {steps / took:.2f} steps/s, {8 * steps / took:.1f} windows/s")


if __name__ == "__main__":
    main()
