"""How fast can a foundation encoder embed on this machine? (a benchmark, not a test)

    python bench/encoder_ceiling.py [--threads 2] [--batch 16] [--repeats 3]

For BirdNET (3 s windows at 48 kHz) and batdetect2 (1 s windows at 256 kHz), on random
audio, batch ``--batch``, this machine's ``--threads``:

1. the network's arithmetic per second of audio (``torch.utils.flop_counter``: the
   convolutions and matrix products, a multiply-add counted as 2 operations);
2. this machine's ceiling: a large float32 (and, where the processor has it natively,
   bfloat16) matrix product's operations per second, the fastest kind of arithmetic a
   network here can hope for;
3. the time of each part (front end or spectrogram, network in float32, channels-last and
   native bfloat16), and the real-time factor they give against the ceiling's
   (operations per second / operations per second of audio).

No network built here runs faster than its ceiling: a target above it needs fewer
operations (a smaller network, fewer windows) or more cores, not another batch size.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import as_package  # noqa: E402

as_package.register()
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from animal_spot.models import birdnet, foundation  # noqa: E402
from animal_spot.utils import runtime  # noqa: E402


def per_call(run, repeats: int) -> float:
    """Seconds per call of ``run`` (after one warm-up call)."""
    run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats


def matmul_rate(dtype: torch.dtype, repeats: int) -> float:
    """Operations per second of a 2048 x 2048 matrix product in ``dtype``."""
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
    return 2 * 2048 ** 3 / per_call(lambda: a @ b, repeats * 3)


def flops(run) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def report(name: str, seconds_of_audio: float, parts, network, image, ceilings, repeats: int) -> None:
    """``parts``: (label, callable) timed as they are; ``network(image)`` is timed in
    float32, bfloat16 and channels-last."""
    operations = flops(lambda: network(image)) / seconds_of_audio
    print(f"{name}: {operations / 1e9:.2f} GFLOP per second of audio (network)")
    for label, rate in ceilings.items():
        print(f"  ceiling from the {label} matrix product: {rate / operations:6.1f}x real time")
    for label, run in parts:
        took = per_call(run, repeats)
        print(f"  {label:<34} {1000 * took / seconds_of_audio:7.2f} ms per second of audio "
              f"({seconds_of_audio / took:6.1f}x real time alone)")
    variants = [("network float32", None, torch.contiguous_format),
                ("network float32, channels-last", None, torch.channels_last)]
    if runtime.cpu_has_native_bf16():           # emulated, bfloat16 is many times slower: not worth the wait
        variants.append(("network bfloat16 (autocast)", torch.bfloat16, torch.contiguous_format))
    with torch.no_grad():
        for label, dtype, layout in variants:
            network.to(memory_format=layout)
            x = image.contiguous(memory_format=layout)

            def run():
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    network(x)
            took = per_call(run, repeats)
            print(f"  {label:<34} {1000 * took / seconds_of_audio:7.2f} ms per second of audio "
                  f"({seconds_of_audio / took:6.1f}x real time alone; {operations * seconds_of_audio / took / 1e9:5.1f}"
                  " GFLOP/s)")
        network.to(memory_format=torch.contiguous_format)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{runtime.machine_description()}, {args.threads} thread(s), batch {args.batch}; native bfloat16: "
          f"{runtime.cpu_has_native_bf16()}")
    ceilings = {"float32": matmul_rate(torch.float32, args.repeats)}
    if runtime.cpu_has_native_bf16():
        ceilings["bfloat16"] = matmul_rate(torch.bfloat16, args.repeats)
    for label, rate in ceilings.items():
        print(f"  {label} 2048 x 2048 matrix product: {rate / 1e9:.0f} GFLOP/s")

    network, _ = birdnet.pretrained()
    network.eval()
    audio = torch.randn(args.batch, 144000) * 0.1
    with torch.no_grad():
        image = network.front_end(audio)
    backbone = torch.nn.Sequential(network.stem, network.blocks, network.head)
    report("BirdNET v2.4 (3 s at 48 kHz)", 3.0 * args.batch,
           [("front end (two float64 projections)", lambda: network.front_end(audio))], backbone, image, ceilings,
           args.repeats)

    encoder = foundation.BatDetect2Encoder(foundation.encoder_options("batdetect2"))
    clips = torch.randn(args.batch, 256000) * 0.1

    def spectrograms():
        return torch.cat([encoder.compute_spectrogram(c.numpy(), 256000, encoder.spectrogram_params,
                                                      torch.device("cpu"))[1] for c in clips])
    specs = spectrograms()
    report("batdetect2 (1 s at 256 kHz)", 1.0 * args.batch, [("PCEN spectrograms (its own code)", spectrograms)],
           encoder.net, specs, ceilings, args.repeats)


if __name__ == "__main__":
    main()
