"""An independent float64 NumPy statement of the original's input formulas (spec §4),
used to check the torch pipeline number by number."""

import math

import numpy as np


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def mel_bank(n_freq, sr, n_mels, fmin, fmax):
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    pts = np.linspace(0 if fmin == 0 else mel(fmin), mel(fmax), n_mels + 2)
    hz = 700 * (10 ** (pts / 2595) - 1)
    b = np.floor((2 * (n_freq - 1) + 1) * hz / sr).astype(int)
    bank = np.zeros((n_mels, n_freq))
    for m in range(1, n_mels + 1):
        l, c, r = b[m - 1], b[m], b[m + 1]
        for k in range(l, c):
            bank[m - 1, k] = (k - l) / (c - l)
        for k in range(c, r):
            bank[m - 1, k] = (r - k) / (r - c)
    return bank


def power_spectrogram(x, n_fft, hop):
    y = np.asarray(x, dtype=np.float64).copy()
    y[1:] = x[1:] - 0.98 * np.asarray(x[:-1], dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = 1 + (len(y) - n_fft) // hop
    spec = np.fft.rfft(np.stack([y[t * hop:t * hop + n_fft] * w for t in range(frames)]), axis=1)
    return np.abs(spec / np.sqrt((w ** 2).sum())) ** 2           # (T, F)


def network_input(x, sr, n_fft, hop, compression="linear", n_bins=256, fmin=500, fmax=10000,
                  min_max=False):
    p = power_spectrogram(x, n_fft, hop)
    if compression == "linear":
        n = (p.shape[1] - 1) * 2
        lo, hi = max(0, math.floor(n * fmin / sr)), min(n - 1, math.ceil(n * fmax / sr))
        band = p[:, lo:hi]
        p = band[:, nearest_indices(band.shape[1], n_bins)]
    else:
        p = p @ mel_bank(p.shape[1], sr, n_bins, fmin, fmax).T
    db = 10 * np.log10(np.maximum(p, 1e-10))
    if min_max:
        db = db - db.min()
        return db / db.max() if db.max() != 0 else db
    return np.clip((db + 80) / 100, 0, 1)
