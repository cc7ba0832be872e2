"""Spectrogram cache (``--cache_dir``): the power spectrogram of a whole clip (load,
resample, pre-emphasis, STFT), before any augmentation.

Entries record every option that shaped them and the source's path, size and
modification time, so a stale or colliding entry is recomputed (the original keyed on
the name, n_fft and hop only: quirk Q-CACHE-KEY). Writes are atomic, so several loader
workers (or runs) can share one cache folder.
"""

import os
from typing import Optional

import torch

from .audio_io import AudioFileError, load_audio
from .features import FeatureOptions
from ..utils.atomic import OutputError, atomic_torch_save


def cache_file_name(cache_dir: str, audio_path: str) -> str:
    """The original's flattened name: folder with '/' (and '\\', ':') -> '_', then '_<stem>.spec'."""
    folder, base = os.path.split(audio_path)
    flat = folder.replace("/", "_").replace("\\", "_").replace(":", "_")
    return os.path.join(cache_dir, flat + "_" + os.path.splitext(base)[0] + ".spec")


class CachedSpectrogram:
    """``spectrogram(path)`` -> power spectrogram ``(1, T, n_fft//2+1)``; cached on disk
    when ``cache_dir`` is set."""

    VERSION = 6                 # 6: resampling with resampy's kaiser_best table (50 zero crossings)

    def __init__(self, options: FeatureOptions, cache_dir: Optional[str] = None, channel: Optional[int] = None):
        self.options = options
        self.cache_dir = cache_dir
        self.channel = channel          # None: the channels' mean; else that channel (1-based)
        if cache_dir:
            try:
                os.makedirs(cache_dir, exist_ok=True)
            except OSError as error:
                raise OutputError(f"--cache_dir {cache_dir}: cannot create the folder ({error.strerror})") from None

    def _key(self, path: str) -> dict:
        stat = os.stat(path)
        o = self.options
        return {"v": self.VERSION, "source": os.path.abspath(path), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "sr": o.sr, "preemphases": o.preemphases,
                "n_fft": o.n_fft, "hop_length": o.hop_length, "channel": self.channel}

    def compute(self, path: str) -> torch.Tensor:
        return self.options.spectrogram(load_audio(path, self.options.sr, self.channel))

    def __call__(self, path: str) -> torch.Tensor:
        if not self.cache_dir:
            return self.compute(path)
        try:
            key = self._key(path)
        except OSError as error:
            raise AudioFileError(f"{path}: {error.strerror or error}") from None
        cache_path = cache_file_name(self.cache_dir, path) + (f".ch{self.channel}" if self.channel else "")
        cached = self._read(cache_path)
        if cached is not None and all(cached.get(k) == v for k, v in key.items()):
            return cached["data"]
        spec = self.compute(path)
        atomic_torch_save(dict(key, data=spec), cache_path, durable=False)
        return spec

    @staticmethod
    def _read(cache_path: str) -> Optional[dict]:
        if not os.path.isfile(cache_path):
            return None
        try:
            entry = torch.load(cache_path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if not isinstance(entry, dict) or not torch.is_tensor(entry.get("data")) or entry["data"].dim() != 3:
            return None
        return entry
