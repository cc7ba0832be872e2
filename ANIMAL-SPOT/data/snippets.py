"""Snippets of recordings for a person to see and hear: a selection with context, as a
spectrogram image (PNG) with the selection marked, and as audio (WAV) with time
expansion.

The image uses the model's own spectrogram settings when they are known (its
``FeatureOptions``: sample rate, FFT, hop, frequency range and compression, dB
normalisation), else display settings for the recording's own rate. Time expansion
serves the samples at ``rate / factor``: the call lasts ``factor`` times longer and its
pitch drops by as much, so ultrasonic calls become audible (a browser's ``playbackRate``
would keep the pitch).
"""

import io
import math
import wave
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
import soundfile as sf
import torch

from .audio_io import AudioFileError, resample, to_mono
from .features import FeatureOptions

MIN_PLAYBACK_RATE = 3000          # browsers refuse to play slower sample rates
IMAGE_HEIGHT = 256


def read_snippet(path: str, begin: float, end: float, context: float, channel: Optional[int] = None
                 ) -> Tuple[np.ndarray, int, float]:
    """Samples of ``[begin - context, end + context]`` (clipped to the recording), mono
    (or one channel, 1-based), float32; with the file's rate and the snippet's start in
    seconds."""
    try:
        info = sf.info(path)
        first = max(0, int(math.floor((begin - context) * info.samplerate)))
        last = min(info.frames, int(math.ceil((end + context) * info.samplerate)))
        if begin * info.samplerate > info.frames:
            raise AudioFileError(f"{path}: the selection {begin:g}-{end:g} s begins after the recording ends "
                                 f"({info.frames / info.samplerate:g} s)")
        with sf.SoundFile(path) as handle:
            handle.seek(first)
            data = handle.read(max(1, last - first), dtype="float32", always_2d=True)
    except AudioFileError:
        raise
    except Exception as error:
        raise AudioFileError(f"{path}: cannot read audio ({error})") from None
    return to_mono(data, channel).numpy(), info.samplerate, first / info.samplerate


def expansion_for(fmax: float) -> int:
    """A time expansion that brings ``fmax`` to at most 16 kHz (1 for audible calls)."""
    return 1 if fmax <= 16000 else 2 ** math.ceil(math.log2(fmax / 16000))


def wav_bytes(samples: np.ndarray, rate: int, expansion: int = 1) -> bytes:
    """16-bit PCM WAV of ``samples`` served at ``rate / expansion`` (peak-normalised to
    -1 dBFS so faint calls can be heard)."""
    played = max(MIN_PLAYBACK_RATE, int(round(rate / max(1, expansion))))
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    scaled = samples * (0.89 / peak) if peak > 0 else samples
    pcm = (np.clip(scaled, -1, 1) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(played)
        handle.writeframes(pcm.tobytes())
    return out.getvalue()


def display_options(rate: int) -> FeatureOptions:
    """Display settings for a recording without a model: ~20 ms frames, 50 % overlap, the
    whole band, linear frequency, dB."""
    n_fft = 2 ** max(8, int(round(math.log2(rate * 0.02))))
    return FeatureOptions(sr=rate, n_fft=n_fft, hop_length=n_fft // 2, n_freq_bins=min(256, n_fft // 2),
                          fmin=0, fmax=rate // 2)


@lru_cache(maxsize=1)
def _viridis() -> np.ndarray:
    import matplotlib

    return (np.asarray(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256)))[:, :3] * 255).astype(np.uint8)


def spectrogram_png(samples: np.ndarray, rate: int, options: Optional[FeatureOptions], mark: Tuple[float, float],
                    width: int = 640) -> bytes:
    """The snippet's spectrogram (time left to right, frequency bottom to top), the
    selection ``mark`` (seconds within the snippet) between two white lines."""
    from PIL import Image, ImageDraw

    options = options or display_options(rate)
    signal = resample(torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0), rate, options.sr)
    features = options.features(options.spectrogram(signal))[0]              # (T, F), 0..1
    image = _viridis()[(features.clamp(0, 1).numpy() * 255).astype(np.uint8)]   # (T, F, 3)
    picture = Image.fromarray(np.ascontiguousarray(image.transpose(1, 0, 2)[::-1]))   # (F, T): low frequencies down
    picture = picture.resize((width, IMAGE_HEIGHT), Image.NEAREST)
    seconds = len(samples) / rate
    draw = ImageDraw.Draw(picture)
    for moment in mark:
        x = int(round(moment / seconds * (width - 1))) if seconds else 0
        draw.line([(x, 0), (x, IMAGE_HEIGHT)], fill=(255, 255, 255), width=2)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()
