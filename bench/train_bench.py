"""Training throughput (a benchmark, not a test): samples per second for ResNet-18 and
ConvNeXt Tiny at the template input (500 ms at 44.1 kHz, n_fft 1024, hop 172, 256 bins:
128 x 256), batch 8 and 32, split into data time and compute time, in one run:

* data: the original's pipeline (every item decoded and transformed afresh each epoch,
  loader workers re-started every epoch) against ours (spectrogram cache, persistent
  workers, prefetching), same files, same worker count;
* compute (forward, backward, Adam step): float32 contiguous (the original's step)
  against each speed option: channels-last, bfloat16 autocast (``--amp``), both;
* end to end: data and compute together, the original's against ours with the fastest
  option.

``python bench/train_bench.py [--device cuda]``; figures are ratios against the
original's measured in the same run, with the machine's description.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from data.audiodataset import Dataset, EpochKeys  # noqa: E402
from data.features import FeatureOptions  # noqa: E402
from data.filenames import find_audio_files  # noqa: E402
from data.samplers import ShuffleSampler  # noqa: E402
from models.model_file import build_model, classifier_options  # noqa: E402
from utils.classmap import ClassMap  # noqa: E402
from utils.runtime import MEMORY_FORMATS, Precision, cpu_has_native_bf16  # noqa: E402
from utils.synthetic import make_call_set  # noqa: E402

OPTIONS = FeatureOptions(sr=44100, n_fft=1024, hop_length=172, n_freq_bins=256, fmin=500, fmax=10000)
FRAMES = 128
ENCODERS = {"ResNet-18": {"backbone": "resnet", "max_pool": 2}, "ConvNeXt Tiny": {"backbone": "convnext"}}
CLASSES = ["K1", "K2", "K3", "noise"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(l.split(":", 1)[1].strip() for l in handle if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def data_rate(files, root, workers, batch, cache, epochs) -> float:
    """Items per second over ``epochs`` epochs (the first warms the cache)."""
    dataset = Dataset(files, root, cache, ClassMap.from_names(CLASSES), seq_len=FRAMES, augmentation=True,
                      options=OPTIONS, seed=1)
    sampler = EpochKeys(ShuffleSampler(len(dataset), 1))
    persistent = cache is not None and workers > 0
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        persistent_workers=persistent, prefetch_factor=4 if workers else None)
    rates = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        items = sum(x.shape[0] for x, _ in loader)
        rates.append(items / (time.perf_counter() - start))
    return max(rates[1:]) if cache else max(rates)


def training_step(encoder, precision: Precision, memory_format: str, device):
    """``step(x, y)``: forward, backward and Adam step of a fresh model."""
    torch.manual_seed(0)
    encoder_opts = {"input_channels": 1, **encoder}
    model = build_model(encoder_opts, classifier_options(encoder_opts, len(CLASSES))).to(device).train()
    model = model.to(memory_format=MEMORY_FORMATS[memory_format])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(x, y):
        x = x.to(device, non_blocking=True).contiguous(memory_format=MEMORY_FORMATS[memory_format])
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y.to(device)).backward()
        optimizer.step()
    return step


def compute_rate(encoder, batch, precision: Precision, memory_format: str, device, steps) -> float:
    train = training_step(encoder, precision, memory_format, device)
    x = torch.rand(batch, 1, FRAMES, OPTIONS.n_freq_bins)
    y = torch.randint(0, len(CLASSES), (batch,))
    step = lambda: train(x, y)
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def end_to_end_rate(files, root, workers, batch, cache, encoder, precision, memory_format, device) -> float:
    """Samples per second of whole epochs (loading and training together); the last of
    two (three with a cache, whose first epoch fills it)."""
    dataset = Dataset(files, root, cache, ClassMap.from_names(CLASSES), seq_len=FRAMES, augmentation=True,
                      options=OPTIONS, seed=1)
    sampler = EpochKeys(ShuffleSampler(len(dataset), 1))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=cache is not None and workers > 0,
                        prefetch_factor=4 if workers else None, pin_memory=device.type == "cuda")
    step = training_step(encoder, precision, memory_format, device)
    rate = 0.0
    for epoch in range(3 if cache else 2):
        sampler.set_epoch(epoch)
        start, items = time.perf_counter(), 0
        for x, label in loader:
            step(x, label["call"])
            items += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = items / (time.perf_counter() - start)
    return rate


def item_breakdown(files, root, count: int = 48) -> dict:
    """Milliseconds per training item in each stage of the pipeline (no cache)."""
    from data.audio_io import load_audio
    from data.augment import RandomAmplitude, RandomPitchShift, RandomTimeStretch, chain
    from utils.seeding import item_rng
    from data.features import pad_or_crop

    stages = {"decode + resample": 0.0, "pre-emphasis + STFT": 0.0, "augmentation": 0.0,
              "compression + dB + normalisation + crop": 0.0}
    augment = [RandomAmplitude(), RandomPitchShift(), RandomTimeStretch()]
    for i, name in enumerate(files[:count]):
        rng = item_rng(1, 0, i)
        t0 = time.perf_counter()
        signal = load_audio(os.path.join(root, name), OPTIONS.sr)
        t1 = time.perf_counter()
        spec = OPTIONS.spectrogram(signal)
        t2 = time.perf_counter()
        spec = chain(augment, spec, rng)
        t3 = time.perf_counter()
        pad_or_crop(OPTIONS.finish(OPTIONS.compress(spec)), FRAMES, True, rng)
        t4 = time.perf_counter()
        for key, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[key] += seconds
    n = min(count, len(files))
    return {key: 1000 * value / n for key, value in stages.items()}


def peak_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            return int(next(l for l in handle if l.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="*", default=[8, 32])
    p.add_argument("--steps", type=int, default=6, help="timed training steps per configuration")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    half = Precision(torch.bfloat16) if device.type == "cpu" and cpu_has_native_bf16() or \
        device.type == "cuda" and torch.cuda.is_bf16_supported() else Precision(torch.float16, True)
    configs = {"float32 (original's step)": (Precision(), "contiguous"),
               "float32 channels-last": (Precision(), "channels_last"),
               f"--amp {half.name}": (half, "contiguous"),
               f"--amp {half.name} channels-last": (half, "channels_last")}
    figures = {"machine": machine(), "data": {}, "compute": {}, "end_to_end": {}}
    print(figures["machine"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        make_call_set(os.path.join(tmp, "data"), {c: args.clips // 4 for c in CLASSES}, tapes_per_class=6, sr=48000,
                      duration=0.8, seed=1)
        files = find_audio_files(os.path.join(tmp, "data"))
        figures["item_ms"] = item_breakdown(files, os.path.join(tmp, "data"))
        print("one training item, ms (48 kHz clip resampled to 44.1 kHz, in the main process): " + ", ".join(
            f"{k} {v:.1f}" for k, v in figures["item_ms"].items()), flush=True)
        for batch in args.batches:
            original = data_rate(files, os.path.join(tmp, "data"), args.workers, batch, None, 2)
            ours = data_rate(files, os.path.join(tmp, "data"), args.workers, batch, os.path.join(tmp, "cache"), 3)
            figures["data"][batch] = {"original": original, "ours": ours}
            print(f"data, batch {batch:2d}, {args.workers} workers (48 kHz clips, resampled): original "
                  f"{original:7.1f} samples/s, ours {ours:7.1f} samples/s ({ours / original:.2f}x)", flush=True)
        for name, encoder in ENCODERS.items():
            for batch in args.batches:
                rates = {label: compute_rate(encoder, batch, precision, fmt, device, args.steps)
                         for label, (precision, fmt) in configs.items()}
                base = rates["float32 (original's step)"]
                figures["compute"][f"{name} batch {batch}"] = rates
                print(f"compute {name:13s} batch {batch:2d}: " + ", ".join(
                    f"{label} {rate:6.1f}/s ({rate / base:.2f}x)" for label, rate in rates.items()), flush=True)
                fastest = max(rates, key=rates.get)
                root = os.path.join(tmp, "data")
                original = end_to_end_rate(files, root, args.workers, batch, None, encoder, Precision(), "contiguous",
                                           device)
                ours = end_to_end_rate(files, root, args.workers, batch, os.path.join(tmp, "cache"), encoder,
                                       *configs[fastest], device)
                figures["end_to_end"][f"{name} batch {batch}"] = {"original": original, "ours": ours, "option": fastest}
                print(f"  end to end: original {original:6.1f} samples/s, ours ({fastest}) {ours:6.1f} samples/s "
                      f"({ours / original:.2f}x)", flush=True)
    figures["peak_memory_mb"] = peak_mb()
    print(f"peak memory of the benchmark process: {figures['peak_memory_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
