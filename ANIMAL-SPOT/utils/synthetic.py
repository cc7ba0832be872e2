"""Seeded synthetic call sets in the ANIMAL-SPOT naming, for tests, the demo and benchmarks.

Each class has its own shape (up-sweep, down-sweep, pulse train, harmonic stack, warble);
``noise`` is band-limited noise. Calls sit in a faint noise floor, so every clip has
energy everywhere and the classes differ by shape, not loudness.
"""

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

SHAPES = ("upsweep", "downsweep", "pulses", "harmonic", "warble")


def call_signal(shape: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One call of ``shape`` lasting ``n`` samples (float64, peak about 0.5)."""
    t = np.arange(n) / sr
    dur = n / sr
    f0 = rng.uniform(1800, 2400)
    if shape == "upsweep":
        phase = 2 * np.pi * (f0 * t + (2500 / (2 * dur)) * t ** 2)
        sig = np.sin(phase)
    elif shape == "downsweep":
        phase = 2 * np.pi * ((f0 + 3000) * t - (2500 / (2 * dur)) * t ** 2)
        sig = np.sin(phase)
    elif shape == "pulses":
        sig = np.sin(2 * np.pi * (f0 + 1500) * t) * (np.sin(2 * np.pi * 12 * t) > 0.3)
    elif shape == "harmonic":
        sig = sum(np.sin(2 * np.pi * k * (f0 / 2) * t) / k for k in (1, 2, 3, 4))
    elif shape == "warble":
        sig = np.sin(2 * np.pi * (f0 + 2000) * t + 8 * np.sin(2 * np.pi * 7 * t))
    elif shape == "noise":
        sig = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same") * 0.8
    else:
        raise ValueError(f"unknown call shape {shape!r}")
    envelope = np.hanning(n) if shape != "noise" else np.ones(n)
    return 0.5 * sig * envelope / max(1e-9, np.max(np.abs(sig)))


def write_clip(path: str, signal: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sf.write(path, np.asarray(signal, dtype=np.float32), sr, subtype=subtype)


def make_call_set(
    root: str,
    classes: Dict[str, int],
    tapes_per_class: int = 4,
    sr: int = 22050,
    duration: float = 0.4,
    seed: int = 0,
    shapes: Optional[Dict[str, str]] = None,
    per_class_folders: bool = True,
) -> List[str]:
    """Write ``classes[name]`` clips per class, spread over ``tapes_per_class`` tapes.

    Names: ``<CLASS>-synth_<id>_<year>_<TAPE>_<startms>_<endms>.wav``. ``shapes`` maps a
    class to a shape (default: the n-th shape, and ``noise`` for a class called noise).
    Returns the written paths relative to ``root``.
    """
    rng = np.random.default_rng(seed)
    shapes = dict(shapes or {})
    call_shapes = iter(SHAPES)
    for name in sorted(classes):
        if name not in shapes:
            shapes[name] = "noise" if name.lower() == "noise" else next(call_shapes)
    n = int(duration * sr)
    written = []
    for name in sorted(classes):
        for i in range(classes[name]):
            tape = f"T{(i % tapes_per_class) + 1}{name.upper()}"
            year = 2015 + (i % tapes_per_class) % 3
            start = 1000 * i
            file_name = f"{name}-synth_{i:04d}_{year}_{tape}_{start}_{start + int(duration * 1000)}.wav"
            rel = os.path.join(name, file_name) if per_class_folders else file_name
            signal = call_signal(shapes[name], n, sr, rng)
            if shapes[name] == "noise":   # from near-silent background to loud noise
                signal *= rng.uniform(0.0, 1.0)
            signal = signal + 0.01 * rng.standard_normal(n)
            write_clip(os.path.join(root, rel), signal, sr)
            written.append(rel)
    return written


def make_recording(path: str, seconds: float, sr: int, events: Sequence[tuple] = (),
                   seed: int = 0, call_len: float = 0.4, subtype: str = "PCM_16",
                   channels: int = 1) -> None:
    """A long recording: faint noise with calls ``(shape, start_second)`` mixed in.
    Written in one-minute chunks, so hours of audio need little memory."""
    rng = np.random.default_rng(seed)
    total, chunk, n = int(seconds * sr), 60 * sr, int(call_len * sr)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with sf.SoundFile(path, "w", sr, channels, subtype) as out:
        for begin in range(0, total, chunk):
            size = min(chunk, total - begin)
            signal = 0.01 * rng.standard_normal(size)
            for shape, start in events:
                i = int(start * sr) - begin
                if 0 <= i < size:
                    piece = call_signal(shape, n, sr, rng)[: size - i]
                    signal[i:i + len(piece)] += piece
            block = np.repeat(signal[:, None], channels, axis=1) if channels > 1 else signal
            out.write(block.astype(np.float32))
