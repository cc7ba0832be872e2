import math

import numpy as np
import pytest
import soundfile as sf
import torch

from data.audio_io import AudioFileError, load_audio, resample
from data.audiodataset import Dataset, StridedAudioDataset
from data.augment import RandomAmplitude, RandomPitchShift, RandomTimeStretch
from data.cache import CachedSpectrogram, cache_file_name
from data.features import FeatureOptions, pad_or_crop, power_spectrogram, seq_frames
from data.recording import RecordingWindows, WindowGeometry
import error_bounds
import reference
from utils.synthetic import make_recording, write_clip


def tone(freq, seconds, sr, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def read64(path):
    """The file's samples as float64 mono (exact: decoding and a two-channel mean)."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.astype(np.float64).mean(axis=1), rate, data.shape[1]


@pytest.mark.parametrize("compression", ["linear", "mel"])
@pytest.mark.parametrize("min_max", [False, True])
def test_input_equals_the_reference_formulas(tmp_path, compression, min_max):
    rng = np.random.default_rng(0)
    signal = (tone(3000, 0.6, 44100) + 0.05 * rng.standard_normal(26460)).astype(np.float32)
    path = str(tmp_path / "x.wav")
    sf.write(path, signal, 44100, subtype="FLOAT")
    options = FeatureOptions(n_fft=1024, hop_length=172, freq_compression=compression, min_max_norm=min_max)
    ours = options.features(options.spectrogram(load_audio(path, 44100)))[0].numpy()
    x = signal.astype(np.float64)
    frames = error_bounds.window_frames(x, [0], len(x), 1024, 172)
    bounds = error_bounds.input_interval(frames, error_bounds.pre_emphasis_sigma(np.abs(x).max(), 0.0),
                                         44100, 1024, compression, 256, 500, 10000, min_max)
    assert ours.shape == bounds[0].shape[1:] == (1 + (26460 - 1024) // 172, 256)
    error_bounds.assert_within(ours, bounds, max_median_width=3e-2 if min_max else 1e-3)
    assert ours.std() > 0.05


@pytest.mark.parametrize("compression", ["linear", "mel"])
def test_input_after_resampling_48k_to_44k1(tmp_path, compression):
    path = str(tmp_path / "x48.wav")
    sf.write(path, tone(2000, 0.5, 48000), 48000, subtype="FLOAT")
    audio = load_audio(path, 44100)
    assert audio.shape == (1, int(24000 * (44100 / 48000)))             # resampy's length rule
    x48, _, _ = read64(path)
    x = reference.resample(x48, 48000, 44100)
    sigma = error_bounds.resample_sigma(48000, 44100, np.abs(x48).max())
    assert np.abs(audio[0].numpy() - x).max() <= error_bounds.Z * sigma
    # kaiser_best passes a 2 kHz tone unchanged (away from the edges' zero padding)
    inner = slice(500, -500)
    assert np.abs(x[inner] - tone(2000, 0.5, 44100).astype(np.float64)[inner]).max() < 1e-3
    options = FeatureOptions(n_fft=1024, hop_length=172, freq_compression=compression)
    ours = options.features(options.spectrogram(audio))[0].numpy()
    frames = error_bounds.window_frames(x, [0], len(x), 1024, 172)
    bounds = error_bounds.input_interval(
        frames, error_bounds.pre_emphasis_sigma(np.abs(x).max(), sigma),
        44100, 1024, compression)
    error_bounds.assert_within(ours, bounds)


@pytest.mark.parametrize("compression", ["linear", "mel"])
def test_pure_tone_peaks_at_its_bin(compression):
    sr, n_fft, freq = 16000, 512, 3000
    options = FeatureOptions(sr=sr, n_fft=n_fft, hop_length=128, n_freq_bins=64, fmin=0, fmax=8000,
                             freq_compression=compression)
    spec = options.compress(options.spectrogram(torch.from_numpy(tone(freq, 0.5, sr)).unsqueeze(0)))
    peak = int(spec[0].mean(0).argmax())
    if compression == "linear":
        # bins 0..255 of 257 (fmax clipped at N-1) squeezed to 64: 4 input bins per output bin
        assert peak == round(freq / (sr / n_fft)) // 4
    else:
        mel = lambda f: 2595 * math.log10(1 + f / 700)
        centres = [700 * (10 ** (m / 2595) - 1) for m in np.linspace(0, mel(8000), 66)[1:-1]]
        assert abs(centres[peak] - freq) <= (centres[peak + 1] - centres[peak - 1])


def test_shapes_follow_the_formula():
    assert seq_frames(1280, 44100, 441) == 128
    assert seq_frames(500, 44100, 172) == 128
    spec = power_spectrogram(torch.zeros(1, 44100), 4096, 441)
    assert spec.shape == (1, 1 + (44100 - 4096) // 441, 2049)
    options = FeatureOptions()
    assert options.features(spec).shape == (1, spec.shape[1], 256)
    assert FeatureOptions(freq_compression="mfcc").features(spec).shape == (1, spec.shape[1], 32)


def test_normalisation_ranges():
    spec = torch.rand(1, 20, 2049) * 10 ** torch.empty(1, 20, 2049).uniform_(-12, 3)
    db_norm = FeatureOptions().features(spec)
    assert 0 <= float(db_norm.min()) and float(db_norm.max()) <= 1
    assert float(FeatureOptions().normalize(torch.tensor([-80.0, 20.0, -200.0, 50.0])).sub(
        torch.tensor([0.0, 1.0, 0.0, 1.0])).abs().max()) < 1e-6
    mm = FeatureOptions(min_max_norm=True).features(spec)
    assert float(mm.min()) == 0.0 and abs(float(mm.max()) - 1.0) < 1e-6
    silence = FeatureOptions(min_max_norm=True).features(torch.zeros(1, 5, 2049))
    assert torch.equal(silence, torch.zeros_like(silence))


class FixedRng:
    def __init__(self, value):
        self.value = value

    def uniform(self, a, b):
        return self.value

    def randrange(self, a, b):
        return self.value


def test_amplitude_augmentation_range():
    import random
    spec = torch.ones(1, 4, 8)
    aug, rng = RandomAmplitude(), random.Random(0)
    gains = {round(10 * math.log10(float(aug(spec, rng)[0, 0, 0]))) for _ in range(400)}
    assert gains == set(range(-6, 3))


def test_pitch_shift_moves_content_and_fills_with_median():
    spec = torch.arange(1, 11, dtype=torch.float32).repeat(3, 1).unsqueeze(0)   # (1, 3, 10)
    down = RandomPitchShift()(spec, FixedRng(math.log2(0.5)))
    assert down.shape == spec.shape
    assert torch.equal(down[0, 0, :5], torch.tensor([1.0, 3, 5, 7, 9]))
    assert torch.all(down[0, :, 5:] == float(spec.median()))
    up = RandomPitchShift()(spec, FixedRng(math.log2(1.5)))
    assert up.shape == spec.shape and float(up.max()) < 10
    with pytest.raises(AssertionError):
        torch.testing.assert_close(up, spec)


def test_time_stretch_changes_length_within_range():
    import random
    spec = torch.rand(1, 40, 8)
    stretch, rng = RandomTimeStretch(), random.Random(1)
    lengths = {stretch(spec, rng).shape[1] for _ in range(200)}
    assert min(lengths) >= 20 and max(lengths) < 80 and len(lengths) > 10


def test_pad_or_crop():
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    assert pad_or_crop(x, 10, False)[0, :, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 0, 0]
    assert pad_or_crop(x, 3, False)[0, :, 0].tolist() == [1, 2, 3]
    import random
    starts = {int(pad_or_crop(x, 3, True, random.Random(i))[0, 0, 0]) for i in range(50)}
    assert starts == {0, 1, 2}                    # the last offset (3) is never drawn


def _dataset(root, files, augmentation, **kw):
    return Dataset(files, str(root), None, {"K1": 0, "K2": 1, "K3": 2, "noise": 3}, sr=16000, n_fft=256,
                   hop_length=64, n_freq_bins=32, f_min=0, f_max=8000, seq_len=40,
                   augmentation=augmentation, dataset_name="t", **kw)


def test_augmentation_on_for_train_off_otherwise(call_set):
    from data.filenames import find_audio_files
    files = find_audio_files(str(call_set))[:3]
    plain = _dataset(call_set, files, False)
    a, label = plain[0]
    b, _ = plain[0]
    assert a.shape == (1, 40, 32) and torch.equal(a, b)
    assert label["call"] == 0 and label["file_name"].endswith(files[0])
    augmented = _dataset(call_set, files, True, seed=5)
    draws = [augmented[(epoch, 0)][0] for epoch in range(4)]
    assert all(d.shape == (1, 40, 32) for d in draws)
    assert any(not torch.equal(d, a) for d in draws)                 # each epoch draws anew ...
    assert torch.equal(augmented[(2, 0)][0], draws[2])               # ... the same for the same (epoch, item)
    assert torch.equal(_dataset(call_set, files, True, seed=5)[(2, 0)][0], draws[2])


def test_noise_augmentation_returns_ground_truth(call_set, tmp_path):
    from data.filenames import find_audio_files
    noise_dir = tmp_path / "noise_files"
    for i in range(2):
        write_clip(str(noise_dir / f"n{i}.wav"), np.random.default_rng(i).standard_normal(8000) * 0.1, 16000)
    from data.audiodataset import noise_files_in
    files = find_audio_files(str(call_set))[:2]
    ds = _dataset(call_set, files, True, noise_files=noise_files_in(str(noise_dir)))
    item, label = ds[0]
    assert item.shape == label["ground_truth"].shape == (1, 40, 32)
    assert not torch.equal(item, label["ground_truth"])


def test_cache_returns_the_uncached_tensor(call_set, tmp_path):
    from data.filenames import find_audio_files
    path = str(call_set / find_audio_files(str(call_set))[0])
    options = FeatureOptions(sr=16000, n_fft=256, hop_length=64)
    cached = CachedSpectrogram(options, str(tmp_path / "cache"))
    first = cached(path)
    cache_path = cache_file_name(str(tmp_path / "cache"), path)
    assert cache_path.endswith(".spec") and "/" not in cache_path[len(str(tmp_path / "cache")) + 1:]
    mtime = __import__("os").path.getmtime(cache_path)
    second = cached(path)
    assert torch.equal(first, second) and torch.equal(first, CachedSpectrogram(options).compute(path))
    assert __import__("os").path.getmtime(cache_path) == mtime                # read, not rewritten
    other = CachedSpectrogram(FeatureOptions(sr=8000, n_fft=256, hop_length=64), str(tmp_path / "cache"))
    assert other(path).shape != first.shape                                    # sr is part of the key


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "FLOAT"])
def test_sample_formats_and_stereo(tmp_path, subtype):
    signal = tone(1000, 0.2, 8000)
    path = str(tmp_path / "x.wav")
    sf.write(path, np.stack([signal, 0.5 * signal], axis=1), 8000, subtype=subtype)
    audio = load_audio(path, 8000)
    assert audio.shape == (1, 1600) and audio.dtype == torch.float32
    assert np.abs(audio[0].numpy() - 0.75 * signal).max() < 0.02


def test_short_silent_and_broken_files(tmp_path):
    options = FeatureOptions(sr=8000, n_fft=256, hop_length=64, n_freq_bins=16, fmin=0, fmax=4000)
    write_clip(str(tmp_path / "short.wav"), tone(1000, 0.01, 8000), 8000)          # 80 < n_fft samples
    assert options.features(options.spectrogram(load_audio(str(tmp_path / "short.wav"), 8000))).shape == (1, 1, 16)
    write_clip(str(tmp_path / "silent.wav"), np.zeros(800), 8000)
    silent = options.features(options.spectrogram(load_audio(str(tmp_path / "silent.wav"), 8000)))
    assert torch.equal(silent, torch.zeros_like(silent))
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioFileError, match="broken.wav"):
        load_audio(str(tmp_path / "broken.wav"), 8000)


def recording_bounds(path, sr, window, step, count, options):
    """Float32 error intervals of every window's input, from the float64 reference."""
    x_in, rate, channels = read64(path)
    peak = np.abs(x_in).max()
    x = reference.resample(x_in, rate, sr)
    sigma = error_bounds.resample_sigma(rate, sr, peak, error_bounds.mono_sigma(channels, peak))
    frames = error_bounds.window_frames(x, [i * step for i in range(count)], min(window, len(x)),
                                        options.n_fft, options.hop_length)
    emphasised = error_bounds.pre_emphasis_sigma(np.abs(x).max(), sigma)
    return error_bounds.input_interval(frames, emphasised, sr, options.n_fft, options.freq_compression,
                                       options.n_freq_bins, options.fmin, options.fmax, options.min_max_norm)


@pytest.mark.parametrize("rate", [16000, 22050])
@pytest.mark.parametrize("min_max", [False, True])
@pytest.mark.parametrize("seconds, hop", [(6.3, 0.23), (6.3, 0.7), (0.4, 0.1)])   # overlap, gaps, short file
def test_block_windows_equal_per_window_inputs(tmp_path, rate, min_max, seconds, hop):
    """Block-wise and per-window inputs both lie within the float32 error bounds of the
    float64 reference, element by element (so they agree on any CPU)."""
    path = str(tmp_path / "rec.wav")
    make_recording(path, seconds, rate, [("upsweep", 0.0), ("pulses", 3.5)], channels=2)
    options = FeatureOptions(sr=16000, n_fft=512, hop_length=100, n_freq_bins=64, fmin=200, fmax=7000,
                             min_max_norm=min_max)
    geometry = WindowGeometry.from_seconds(0.5, hop, 16000, 0)
    window, step = geometry.window, geometry.step
    per_window = StridedAudioDataset(path, window, step, options=options)
    blocks = torch.cat([b for _, b in RecordingWindows(path, options, 0.5, hop, batch_size=5)])
    expected = torch.stack([per_window[i] for i in range(len(per_window))])
    frames = 1 + (min(8000, per_window.n_frames) - 512) // 100
    assert blocks.shape == expected.shape == (len(per_window), 1, frames, 64)
    bounds = recording_bounds(path, 16000, window, step, len(per_window), options)
    loose = 3e-2 if min_max else 1e-3
    error_bounds.assert_within(blocks[:, 0].numpy(), bounds, "block-wise input", loose)
    error_bounds.assert_within(expected[:, 0].numpy(), bounds, "per-window input", loose)
    assert float(expected.std()) > 0.01


# resampy 0.4.3's own output for a unit impulse (resampy.resample(x, a, b, filter="kaiser_best")
# with x = zeros(600), x[position] = 1): numbers written down from resampy, not from this code.
RESAMPY_IMPULSE = {
    (48000, 44100, 200): {176: -0.010906722865381009, 179: 0.0524337648565382, 182: -0.15685067756147736,
                          185: -0.10360728130730078, 188: -0.020611609892695868},
    (16000, 44100, 100): {270: -0.060350657945489515, 273: 0.12890519406143786, 276: 0.8939802991883488,
                          279: -0.09781579740995602, 282: 0.050685810567187774},
    (44100, 16000, 300): {104: 0.022126482815758863, 106: 0.03751844017585258, 108: 0.08915747655326334,
                          110: -0.018904518464134455, 112: 0.011514526996318924},
}


@pytest.mark.parametrize("rates", list(RESAMPY_IMPULSE))
def test_resampling_is_resampys_kaiser_best(rates):
    """An impulse's output is one filter weight, rounded once to float32 (2^-24 relative);
    the float64 reference states resampy's loop and must give resampy's numbers exactly."""
    orig, new, position = rates
    x = np.zeros(600)
    x[position] = 1.0
    ours = resample(torch.from_numpy(x).float().unsqueeze(0), orig, new)[0].double().numpy()
    exact = reference.resample(x, orig, new)
    assert len(ours) == len(exact) == int(600 * new / orig)
    for index, value in RESAMPY_IMPULSE[rates].items():
        assert abs(exact[index] - value) <= 1e-15
        assert abs(ours[index] - value) <= 2.0 ** -24 * abs(value)


def test_resampling_in_blocks_equals_whole_file(tmp_path):
    from data.audio_io import SignalReader
    path = str(tmp_path / "r.wav")
    make_recording(path, 3.0, 48000, [("warble", 1.0)])
    x_in, _, _ = read64(path)
    exact = reference.resample(x_in, 48000, 44100)
    bound = error_bounds.Z * error_bounds.resample_sigma(48000, 44100, np.abs(x_in).max())
    whole = load_audio(path, 44100)[0].numpy()
    reader = SignalReader(path, 44100)
    assert reader.n_samples == whole.shape[0] == exact.shape[0]
    assert np.abs(whole - exact).max() <= bound
    for start, stop in [(0, 1000), (12345, 40000), (whole.shape[0] - 777, whole.shape[0])]:
        assert np.abs(reader.read(start, stop).numpy() - exact[start:stop]).max() <= bound


def test_a_broken_file_in_a_loader_worker_names_the_file(call_set):
    from data.filenames import find_audio_files
    files = find_audio_files(str(call_set))[:2]
    (call_set / files[1]).write_bytes(b"not a wav file")
    loader = torch.utils.data.DataLoader(_dataset(call_set, files, False), batch_size=2, num_workers=1)
    with pytest.raises(AudioFileError, match=files[1].split("/")[-1]):
        next(iter(loader))


def test_front_end_masks_cover_bands_and_frames_in_training_only_and_repeat_with_the_seed():
    from data.augment import FrontEndMasks, SpecAugment
    from models.birdnet import BirdNetBackbone

    model = BirdNetBackbone()                               # random weights: only the front end's image matters
    model.mask_front_end(FrontEndMasks(SpecAugment(2, 30, 2, 20), model))
    front = model.network.front_end
    with torch.no_grad():                                   # bands that see the audio, and a floor of its own
        for branch in front.branches:
            branch.mel.uniform_()
        front.shift.fill_(-1.0)
    audio = torch.randn(4, 48000 * 3)
    model.eval()
    plain = front(audio)
    assert torch.equal(front(audio), plain)                 # eval: the hook leaves the image alone
    model.train()
    torch.manual_seed(7)
    masked = front(audio)
    torch.manual_seed(7)
    assert torch.equal(front(audio), masked)                # the same torch seed, the same masks
    changed = masked != plain
    floor = front.floor().expand_as(masked)
    assert torch.equal(masked[changed], floor[changed])     # masked cells hold silence's value
    per_item = [int(c.any(dim=0).all(dim=0).sum()) + int(c.any(dim=0).all(dim=1).sum()) for c in changed]
    assert all(0 < n <= 2 * 30 + 2 * 20 for n in per_item)  # whole frames and whole bands, at most their widths
    assert len({tuple(c.any(dim=0).all(dim=0).nonzero().flatten().tolist()) for c in changed}) > 1  # per item
    masked.sum().backward()                                  # trainable through the unmasked cells
    assert front.scale.grad is not None and float(front.scale.grad.abs().sum()) > 0
