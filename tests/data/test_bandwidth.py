"""A class recorded with another bandwidth is named before training, with a way out, and
the model card keeps the per-class sample-rate table."""

import numpy as np
import soundfile as sf

import main as train_main
from conftest import small_run
from data.bandwidth import band_warning, class_bands
from utils.synthetic import make_call_set


def test_a_class_recorded_at_a_lower_rate_is_named_before_training(tmp_path):
    data = tmp_path / "data"
    make_call_set(str(data), {"K1": 10, "K2": 10, "noise": 10}, tapes_per_class=5, sr=16000, duration=0.3, seed=1)
    for path in data.rglob("K1-*.wav"):               # K1's recorder: 8 kHz, nothing above 4 kHz
        signal, rate = sf.read(str(path))
        sf.write(str(path), signal[::2], rate // 2)
    files = [str(p.relative_to(data)) for p in data.rglob("*.wav")]
    bands = class_bands(files, str(data), 8000)
    assert bands["K1"].rates == {8000: 10} and bands["K1"].share_below == 1.0 and bands["K2"].below == 0
    warning = band_warning(bands, 0, 8000, 16000)
    assert "K1: 100 % of its 10 clips end below 8000 Hz" in warning and "--fmax 4000" in warning
    assert band_warning(class_bands(files, str(data), 4000), 0, 4000, 16000) is None      # the way out
    assert "above the model's Nyquist" in band_warning(bands, 0, 10000, 8000)            # --sr 8000, fmax 10 kHz
    out = tmp_path / "m"
    argv = ["--data_dir", str(data), "--model_dir", str(out), "--log_dir", str(tmp_path / "log"), "--num_classes",
            "3", "--max_train_epochs", "1", "--no_progress"] + small_run(200, 3, 0)
    assert train_main.main(argv) == 0
    log = (tmp_path / "log" / "TRAIN.log").read_text()
    assert "a model can learn the recorder, not the call: K1: 100 %" in log
    card = (out / "MODEL_CARD.md").read_text()
    assert "| K1 | 8000: 10 | 10 of 10 |" in card and "| K2 | 16000: 10 | 0 of 10 |" in card
    assert "**Warning:**" in card


def test_one_recorder_for_every_class_says_nothing(tmp_path):
    data = tmp_path / "data"
    make_call_set(str(data), {"K1": 4, "K2": 4}, tapes_per_class=2, sr=16000, duration=0.3, seed=2)
    files = [str(p.relative_to(data)) for p in data.rglob("*.wav")]
    assert band_warning(class_bands(files, str(data), 8000), 0, 8000, 16000) is None
    assert np.isclose(class_bands(files, str(data), 8000)["K1"].band_end(8000), 8000)
