"""An independent float64 NumPy statement of the original's input formulas (spec §4),
used to check the torch pipeline number by number, and the float32 error bounds that
say how far a correct float32 computation may land from it (see ``error_bounds``)."""

import math

import numpy as np


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def mel_bank(n_freq, sr, n_mels, fmin, fmax):
    """Triangular filters with peak 1; bin positions use the (n_fft + 1) factor (Q-MEL-BINS)."""
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


def hann(n_fft):
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def pre_emphasis(x, factor=0.98):
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    y[1:] = x[1:] - factor * x[:-1]
    return y


def frames_of(y, n_fft, hop):
    """STFT frames (T, n_fft) without centring; a signal shorter than n_fft is
    zero-padded to one frame (the fork's fix of Q-SHORT)."""
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    count = 1 + (len(y) - n_fft) // hop
    return np.stack([y[t * hop:t * hop + n_fft] for t in range(count)])


def power_spectrogram(x, n_fft, hop):
    """Pre-emphasis, framing, periodic Hann, |rfft|^2 / sum(w^2): (T, F)."""
    w = hann(n_fft)
    spec = np.fft.rfft(frames_of(pre_emphasis(x), n_fft, hop) * w, axis=1)
    return np.abs(spec) ** 2 / (w ** 2).sum()


def compress(p, sr, compression="linear", n_bins=256, fmin=500, fmax=10000):
    if compression == "linear":
        n = (p.shape[-1] - 1) * 2
        lo, hi = max(0, math.floor(n * fmin / sr)), min(n - 1, math.ceil(n * fmax / sr))
        band = p[..., lo:hi]
        return band[..., nearest_indices(band.shape[-1], n_bins)]
    return p @ mel_bank(p.shape[-1], sr, n_bins, fmin, fmax).T


def normalise(db, min_max):
    if min_max:
        db = db - db.min()
        return db / db.max() if db.max() != 0 else db
    return np.clip((db + 80) / 100, 0, 1)


def network_input(x, sr, n_fft, hop, compression="linear", n_bins=256, fmin=500, fmax=10000,
                  min_max=False):
    p = compress(power_spectrogram(x, n_fft, hop), sr, compression, n_bins, fmin, fmax)
    return normalise(10 * np.log10(np.maximum(p, 1e-10)), min_max)


# ---------------------------------------------------------------------- resampling
KAISER_BEST = dict(width=64, rolloff=0.9475937167399596, beta=14.769656459379492)


def resample_kernel(orig: int, new: int):
    """Kaiser-windowed sinc filters of resampy's ``kaiser_best`` design, one row per
    output phase (float64): ``h[j, i] = s * sinc(s * (i / o - j / n)) * kaiser(...)``
    with ``s = min(o, n) * rolloff`` in units of the reduced rates ``o``, ``n``."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * KAISER_BEST["rolloff"]
    width = math.ceil(KAISER_BEST["width"] * o / base)
    idx = np.arange(-width, width + o) / o
    t = (-np.arange(n)[:, None] / n + idx[None, :]) * base
    t = np.clip(t, -KAISER_BEST["width"], KAISER_BEST["width"])
    beta = KAISER_BEST["beta"]
    window = np.i0(beta * np.sqrt(1 - (t / KAISER_BEST["width"]) ** 2)) / np.i0(beta)
    kernel = np.sinc(t) * window * base / o
    return kernel, width, o, n


def resample(x, orig: int, new: int):
    """``x`` (float64) from ``orig`` to ``new`` Hz; ``int(len(x) * new / orig)`` samples
    (resampy's length rule)."""
    if orig == new:
        return np.asarray(x, dtype=np.float64)
    kernel, width, o, n = resample_kernel(orig, new)
    padded = np.pad(np.asarray(x, dtype=np.float64), (width, width + o))
    taps = kernel.shape[1]
    count = (len(padded) - taps) // o + 1
    starts = np.arange(count) * o
    blocks = np.stack([padded[s:s + taps] for s in starts])           # (count, taps)
    out = (blocks @ kernel.T).reshape(-1)                                # phase-interleaved
    return out[:int(len(x) * (float(new) / orig))]
