"""How far a correct float32 computation of the network input may land from the float64
reference of ``reference.py``: element-wise intervals derived from the operations, so the
suite's tolerances hold on any CPU, FFT library and thread count.

Model. Worst-case bounds (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002,
Thm 24.2 for the FFT, §3.1 for sums) put every rounding error at its maximum and in the
same direction; for a length-n FFT they are sqrt(n) looser than what any library produces
and would leave nothing to test on quiet bins or after min-max normalisation. We use the
standard statistical model instead (Higham §3.6; Wilkinson's rule of thumb): each
float32 operation adds an independent error of at most u = 2^-24 relative, so a sum of m
rounded terms has a standard deviation of u * sqrt(m / 3) times its scale, and we allow
``Z`` = 10 standard deviations (a correct computation falls outside with probability far
below 1e-20 per element; a wrong window, frame or normalisation falls outside by orders
of magnitude). Per step:

* samples: decoding is exact; a mean over c channels, resampling (a dot product of K
  taps, kernel rounded to float32 too) and pre-emphasis give a per-sample error standard
  deviation ``sample_sigma`` (``mono_sigma``, ``resample_sigma``, ``pre_emphasis_sigma``).
* spectrum: a radix-2 FFT applies log2(n) butterfly stages of about 6 roundings each;
  its error vector has norm u * sqrt(2 log2(n)) * ||X||_2 and spreads over the n bins, so
  a bin's error has standard deviation u * sqrt(2 log2(n) / n) * ||X||_2 (plus one
  rounding each for the window product and the division by the window norm); an input
  error of standard deviation s per sample gives s per bin of the normalised spectrum
  (Parseval). So each bin lies within Delta = Z * (both) of its exact value, its power
  within [(|X| - Delta)^2, (|X| + Delta)^2] (3 u more for |X|^2).
* linear compression selects bins (exact); mel sums non-negative terms, so the interval
  maps through it (gamma(F) for the float32 sum, 2 u for the float32 weights; worst case,
  small).
* dB is monotone (4 u * 100 dB for float32 log10 at |dB| <= 100); the dB normalisation
  is monotone; min-max normalisation is monotone in the element and in the window's
  minimum and maximum, whose intervals follow from the elements'.

Low-power bins in loud frames get wide intervals (a float32 FFT cannot resolve a bin far
below the frame's energy better than that); loud bins get intervals of a few ulps.
"""

import math

import numpy as np

import reference

U = 2.0 ** -24
Z = 10.0
DB_FLOOR = 1e-10


def gamma(k: int) -> float:
    """Worst-case relative error of a k-term float32 sum (used where it is small anyway)."""
    return k * U / (1 - k * U)


def fft_bin_sigma(n: int) -> float:
    """Standard deviation of one bin's error, relative to the spectrum's 2-norm."""
    return U * math.sqrt((2 * math.log2(n) + 2) / n)


def mono_sigma(channels: int, peak: float) -> float:
    return U * math.sqrt(channels / 3) * peak if channels > 1 else 0.0


def resample_sigma(orig: int, new: int, peak: float, incoming: float = 0.0) -> float:
    """Per-sample error standard deviation of the float32 resampler, for input samples
    with error standard deviation ``incoming`` and magnitude at most ``peak``."""
    if orig == new:
        return incoming
    rows = reference.resample_rows(orig, new)
    taps = max(len(row) for row in rows)
    l2 = max(float(np.sqrt((row ** 2).sum())) for row in rows)
    return U * math.sqrt((taps + 1) / 3) * l2 * peak + l2 * incoming


def pre_emphasis_sigma(peak: float, incoming: float) -> float:
    return U * math.sqrt(3) * 2 * peak + math.hypot(1, 0.98) * incoming


def frame_deltas(frames: np.ndarray, n_fft: int, sample_sigma: float) -> np.ndarray:
    """Per frame (last axis = samples of the pre-emphasised frame, float64): how far each
    bin of the normalised spectrum of one float32 computation may be from exact."""
    w = reference.hann(n_fft)
    spectrum_norm = math.sqrt(n_fft) * np.sqrt(((frames * w) ** 2).sum(axis=-1)) / np.sqrt((w ** 2).sum())
    return Z * (fft_bin_sigma(n_fft) * spectrum_norm + sample_sigma)


def window_frames(signal: np.ndarray, starts, length: int, n_fft: int, hop: int) -> np.ndarray:
    """Pre-emphasised frames (windows, T, n_fft) of each window ``signal[s:s+length]``
    (each window pre-emphasised on its own, as the original's prediction does)."""
    return np.stack([reference.frames_of(reference.pre_emphasis(signal[s:s + length]), n_fft, hop)
                     for s in starts])


def input_interval(frames: np.ndarray, sample_sigma: float, sr: int, n_fft: int,
                   compression: str = "linear", n_bins: int = 256, fmin: float = 500,
                   fmax: float = 10000, min_max: bool = False):
    """``(lo, hi)`` network inputs (windows, T, bins) that a correct float32 pipeline can
    produce from ``frames`` (windows, T, n_fft: float64 pre-emphasised samples whose
    float32 counterparts have errors of standard deviation ``sample_sigma``)."""
    w = reference.hann(n_fft)
    exact = np.abs(np.fft.rfft(frames * w, axis=-1)) / np.sqrt((w ** 2).sum())
    delta = frame_deltas(frames, n_fft, sample_sigma)[..., None]
    power_lo = np.maximum(exact - delta, 0.0) ** 2 * (1 - 3 * U)
    power_hi = (exact + delta) ** 2 * (1 + 3 * U)
    lo = reference.compress(power_lo, sr, compression, n_bins, fmin, fmax)
    hi = reference.compress(power_hi, sr, compression, n_bins, fmin, fmax)
    if compression != "linear":
        slack = gamma(power_lo.shape[-1]) + 2 * U
        lo, hi = lo * (1 - slack), hi * (1 + slack)
    db_slack = 4 * U * 100
    db_lo = 10 * np.log10(np.maximum(lo, DB_FLOOR)) - db_slack
    db_hi = 10 * np.log10(np.maximum(hi, DB_FLOOR)) + db_slack
    if not min_max:
        return (np.clip((db_lo + 80) / 100, 0, 1) - 4 * U, np.clip((db_hi + 80) / 100, 0, 1) + 4 * U)
    axes = tuple(range(1, db_lo.ndim))
    m_lo, m_hi = db_lo.min(axis=axes, keepdims=True), db_hi.min(axis=axes, keepdims=True)
    big_lo, big_hi = db_lo.max(axis=axes, keepdims=True), db_hi.max(axis=axes, keepdims=True)
    m_low_side = np.minimum(m_hi, db_lo)                    # the minimum cannot exceed the element
    with np.errstate(divide="ignore", invalid="ignore"):
        out_lo = (db_lo - m_low_side) / (big_hi - m_low_side)
        out_hi = (db_hi - m_lo) / (np.maximum(big_lo, db_hi) - m_lo)
    out_lo = np.where(np.isfinite(out_lo), out_lo, 0.0)
    out_hi = np.where(np.isfinite(out_hi), out_hi, 1.0)
    return np.clip(out_lo, 0, 1) - 4 * U, np.clip(out_hi, 0, 1) + 4 * U


def assert_within(values, interval, what: str = "input", max_median_width: float = 1e-3) -> None:
    """Every element inside its interval, and the intervals informative: their median
    width at most ``max_median_width`` (a property of the data's dynamic range, computed in
    float64; min-max normalisation carries the uncertainty of each window's quietest bin
    into all its elements, so it needs about 3e-2)."""
    lo, hi = interval
    values = np.asarray(values, dtype=np.float64).reshape(lo.shape)
    outside = (values < lo) | (values > hi)
    if outside.any():
        i = np.unravel_index(np.argmax(outside), lo.shape)
        raise AssertionError(f"{int(outside.sum())} {what} element(s) outside their float32 error bounds, "
                             f"e.g. at {i}: {values[i]!r} not in [{lo[i]!r}, {hi[i]!r}]")
    median = float(np.median(hi - lo))
    assert median <= max_median_width, f"bounds too loose to test anything (median width {median:.2e})"


def network_tolerance(model, inputs, factor: float = 4.0) -> float:
    """How far two float32 evaluations of ``model`` on ``inputs`` (other batch sizes,
    kernels or thread counts) may differ in their probabilities: ``factor`` times this
    model's measured float32 rounding on these inputs (its distance from a float64
    evaluation), plus a few ulps. Both evaluations sum the same products in different
    orders, so their errors are of the same size; a wrong window or class is off by
    orders of magnitude more."""
    import copy

    import torch

    exact_model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        p32 = torch.softmax(model.eval()(inputs).float(), dim=1).double()
        p64 = torch.softmax(exact_model(inputs.double()), dim=1)
    return factor * float((p32 - p64).abs().max()) + 8 * U
