"""An independent float64 NumPy statement of the original's input formulas (spec §4),
used to check the torch pipeline number by number, and the float32 error bounds that
say how far a correct float32 computation may land from it (see ``error_bounds``)."""

import functools
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
# resampy's kaiser_best: its stored table is a Kaiser-windowed sinc (scipy's symmetric
# window over the whole filter), 50 zero crossings, 8192 entries per crossing.
KAISER_BEST = dict(zeros=50, precision=8192, rolloff=0.9173473712608761, beta=12.984585247040012)


@functools.lru_cache(maxsize=1)
def kaiser_best_table() -> np.ndarray:
    import scipy.signal
    n = KAISER_BEST["zeros"] * KAISER_BEST["precision"]
    window = scipy.signal.get_window(("kaiser", KAISER_BEST["beta"]), 2 * n + 1, fftbins=False)[n:]
    r = KAISER_BEST["rolloff"]
    return r * np.sinc(r * np.linspace(0, KAISER_BEST["zeros"], n + 1)) * window


def resample_weights(orig: int, new: int, t_out: np.ndarray, n_in: int):
    """resampy's loop, stated for many outputs at once (float64): for output times
    ``t_out`` (in input samples), the input indices and weights of each wing."""
    ratio = float(new) / orig
    scale = min(1.0, ratio)
    win = kaiser_best_table() * (ratio if ratio < 1 else 1.0)
    delta = np.diff(win, append=win[-1])
    P = KAISER_BEST["precision"]
    step = int(scale * P)
    n = t_out.astype(np.int64)
    wings = []
    for frac, first, direction, room in ((scale * (t_out - n), n, -1, n + 1),
                                         (scale - scale * (t_out - n), n + 1, 1, n_in - n - 1)):
        offset = (frac * P).astype(np.int64)
        eta = frac * P - offset
        count = np.minimum(room, (len(win) - offset) // step)
        for i in range(int(count.max(initial=0))):
            use = i < count
            index = np.where(use, offset + i * step, 0)
            wings.append((np.where(use, first + direction * i, 0), np.where(use, win[index] + eta * delta[index], 0.0)))
    return wings


def resample(x, orig: int, new: int):
    """``x`` (float64) from ``orig`` to ``new`` Hz as resampy computes it (in float64);
    ``int(len(x) * new / orig)`` samples (resampy's length rule)."""
    x = np.asarray(x, dtype=np.float64)
    if orig == new:
        return x
    t_out = np.arange(int(len(x) * float(new) / float(orig))) * (1.0 / (float(new) / orig))
    y = np.zeros(len(t_out))
    for index, weight in resample_weights(orig, new, t_out, len(x)):
        y += weight * x[index]
    return y


def resample_rows(orig: int, new: int):
    """The weights of each output phase (one period, far from the signal's edges)."""
    t_out = 10_000 + np.arange(new // math.gcd(orig, new)) * (orig / new)
    wings = resample_weights(orig, new, t_out, 10 ** 6)
    return [np.array([weight[j] for _, weight in wings if weight[j] != 0.0]) for j in range(len(t_out))]
