"""A crash costs no more than the last checkpoint, a bad file gets one clear message
naming it and a non-zero exit, and model files that would run code are refused."""

import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import main as train_main
import predict
from models.model_file import FORMAT_VERSION, ModelFileError, load_model
from utils.synthetic import make_call_set, make_recording, write_clip
from conftest import small_run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN = os.path.join(ROOT, "ANIMAL-SPOT", "main.py")
SMALL = small_run(200, 3, None, "--no_progress", "--memory_format", "contiguous")
FAST = ["--backbone", "mobilenet_v3_small"]     # 15 MB checkpoints instead of ResNet-18's 180 MB
EPOCH_LINE = re.compile(r"\|I\|((?:train|val|test)\|\d+\|loss:.*)\|t:[\d.]+$")


def epoch_lines(log_file):
    return [m.group(1) for m in map(EPOCH_LINE.search, open(log_file).read().splitlines()) if m]


def run_args(data, out, workers, epochs=5, *extra):
    return ["--data_dir", str(data), "--model_dir", str(out / "m"), "--checkpoint_dir", str(out / "c"),
            "--log_dir", str(out / "l"), "--summary_dir", str(out / "tb"), "--num_classes", "4", "--augmentation",
            "--num_workers", workers, "--max_train_epochs", str(epochs)] + SMALL + FAST + list(extra)


@pytest.mark.parametrize("workers, groups", [("0", []), ("2", ["--backbone_lr", "1e-5"])])
def test_killed_run_resumed_is_the_uninterrupted_run(tmp_path, call_set, workers, groups):
    """(With --backbone_lr the optimizer holds two parameter groups, the head's first.)"""
    assert train_main.main(run_args(call_set, tmp_path / "a", workers, 5, *groups)) == 0
    b = tmp_path / "b"
    process = subprocess.Popen([sys.executable, MAIN] + run_args(call_set, b, workers, 5, *groups),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = b / "c" / "multi_class_4_classifier_epoch_00001.checkpoint"
    deadline = time.time() + 240
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)                    # mid-epoch 2 (or 3): no clean shutdown
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done = sorted(os.listdir(b / "c"))
    assert "multi_class_4_classifier_epoch_00004.checkpoint" not in done
    assert train_main.main(run_args(call_set, b, workers, 5, *groups)) == 0          # the same command again
    resumed = epoch_lines(b / "l" / "TRAIN.log")
    start = int(re.search(r"Resuming with epoch (\d+)", (b / "l" / "TRAIN.log").read_text()).group(1))
    assert start >= 2
    uninterrupted = [line for line in epoch_lines(tmp_path / "a" / "l" / "TRAIN.log")
                     if line.startswith("test") or int(line.split("|")[1]) >= start]
    assert resumed == uninterrupted
    last = "multi_class_4_classifier_epoch_00004.checkpoint"
    saved_a = torch.load(tmp_path / "a" / "c" / last, weights_only=True)
    state_a, state_b = saved_a["modelState"], torch.load(b / "c" / last, weights_only=True)["modelState"]
    assert len(saved_a["trainState"]["optState"]["param_groups"]) == (2 if groups else 1)
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=0, atol=1e-6)


def test_corrupt_newest_checkpoint_is_named_and_the_previous_used(tmp_path, call_set):
    frozen = ["--freeze_backbone"]                        # its optimizer holds the head's parameters alone
    assert train_main.main(run_args(call_set, tmp_path, "0", 2, *frozen)) == 0
    newest = tmp_path / "c" / "multi_class_4_classifier_epoch_00001.checkpoint"
    newest.write_bytes(newest.read_bytes()[:1000])                       # truncated
    assert train_main.main(run_args(call_set, tmp_path, "0", 3, *frozen)) == 0
    log = (tmp_path / "l" / "TRAIN.log").read_text()
    assert f"Checkpoint {newest} cannot be read" in log and "Resuming with epoch 1" in log and "|train|2|loss" in log


def test_a_checkpoint_missing_a_key_is_one_clear_error(tmp_path, call_set, capsys):
    assert train_main.main(run_args(call_set, tmp_path, "0", epochs=1)) == 0
    path = tmp_path / "c" / "multi_class_4_classifier_epoch_00000.checkpoint"
    state = torch.load(path, weights_only=True)
    del state["trainState"]["optState"]
    torch.save(state, path)
    assert train_main.main(run_args(call_set, tmp_path, "0", epochs=2)) == 1
    err = capsys.readouterr().err
    assert "missing trainState.optState" in err and str(path) in err and "Traceback" not in err


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, call_set, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def failing_save(obj, handle, *a, **k):
        calls.append(1)
        if len(calls) == 2:                       # the second checkpoint: the disk fills up mid-write
            handle.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, handle, *a, **k)
    monkeypatch.setattr(torch, "save", failing_save)
    assert train_main.main(run_args(call_set, tmp_path, "0", epochs=3)) == 1
    monkeypatch.setattr(torch, "save", real_save)
    err = capsys.readouterr().err
    second = tmp_path / "c" / "multi_class_4_classifier_epoch_00001.checkpoint"
    assert f"{second}: cannot write (No space left on device)" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path / "c")) == ["multi_class_4_classifier_epoch_00000.checkpoint"]
    assert torch.load(tmp_path / "c" / "multi_class_4_classifier_epoch_00000.checkpoint",
                      weights_only=True)["trainState"]["epoch"] == 0
    assert len(calls) == 2                        # the run stopped at the failed write, saving nothing after it


def test_keep_checkpoints_and_provenance(tmp_path, call_set):
    assert train_main.main(run_args(call_set, tmp_path, "0", epochs=3) + ["--keep_checkpoints", "2"]) == 0
    assert sorted(os.listdir(tmp_path / "c")) == ["multi_class_4_classifier_epoch_00001.checkpoint",
                                                  "multi_class_4_classifier_epoch_00002.checkpoint"]
    state = torch.load(tmp_path / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    assert state["formatVersion"] == FORMAT_VERSION
    provenance = state["provenance"]
    assert provenance["torch"] == str(torch.__version__) and provenance["version"]
    assert "--keep_checkpoints" in provenance["command"] or provenance["command"]
    assert re.fullmatch(r"[0-9a-f]{16}", provenance["splitHash"])
    ckpt = torch.load(tmp_path / "c" / "multi_class_4_classifier_epoch_00002.checkpoint", weights_only=True)
    from utils.checkpoints import CHECKPOINT_FORMAT
    assert ckpt["formatVersion"] == CHECKPOINT_FORMAT and list(ckpt)[:3] == ["modelState", "trainState", "classes"]
    assert set(ckpt["trainState"]) == {"epoch", "best_metric", "best_model", "optState", "earlyStopping", "scheduler"}


# ------------------------------------------------------------------------- bad input
@pytest.fixture
def bad_set(tmp_path):
    root = tmp_path / "bad"
    make_call_set(str(root), {"K1": 8, "K2": 8, "K3": 8, "noise": 8}, tapes_per_class=4, sr=16000, duration=0.3)
    (root / "K1" / "K1-x_9001_2019_T1K1_0_1.wav").write_bytes(b"")                          # zero-length
    (root / "K1" / "K1-x_9002_2019_T2K1_0_1.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # corrupt
    (root / "K2" / "K2-x_9003_2019_T1K2_0_1.wav").write_text("not audio at all")             # non-audio
    bad = np.full(4800, 0.1, dtype=np.float32)
    bad[100] = np.nan
    sf.write(str(root / "K2" / "K2-x_9004_2019_T2K2_0_1.wav"), bad, 16000, subtype="FLOAT")   # NaN samples
    return root


def train_on(data, out, *extra):
    return train_main.main(["--data_dir", str(data), "--model_dir", str(out / "m"), "--num_classes", "4",
                            "--summary_dir", str(out / "tb"), "--num_workers", "0", "--max_train_epochs", "1"]
                           + SMALL + list(extra))


def test_unreadable_training_files_stop_before_the_first_epoch(tmp_path, bad_set, capsys):
    assert train_on(bad_set, tmp_path) == 1
    err = capsys.readouterr().err
    assert "4 training file(s) cannot be used" in err and "|train|0|" not in err
    for name in ("9001", "9002", "9003", "9004"):
        assert name in err
    assert "NaN or infinite" in err and "Traceback" not in err


def test_filter_broken_audio_sets_them_aside(tmp_path, bad_set, capsys):
    assert train_on(bad_set, tmp_path, "--filter_broken_audio") == 0
    err = capsys.readouterr().err
    assert "Moved 4 near-silent or unreadable file(s)" in err or "Setting aside 4 unreadable" in err
    assert len(list((bad_set / "K1" / "bkp").iterdir())) == 2


def test_other_sample_formats_are_valid(tmp_path):
    root = tmp_path / "formats"
    make_call_set(str(root), {"K1": 8, "K2": 8, "K3": 8, "noise": 8}, tapes_per_class=4, sr=16000, duration=0.3)
    rng = np.random.default_rng(0)
    for i, (subtype, channels, ext) in enumerate([("PCM_U8", 1, "wav"), ("PCM_24", 1, "wav"), ("FLOAT", 1, "wav"),
                                                  ("PCM_16", 2, "wav"), ("PCM_16", 1, "WAV")]):
        signal = 0.3 * rng.standard_normal((4800, channels)).astype(np.float32)
        sf.write(str(root / "K1" / f"K1-f_{800 + i}_2019_T{i % 4 + 1}K1_0_300.{ext}"), signal, 16000, subtype=subtype)
    assert train_on(root, tmp_path) == 0


@pytest.mark.parametrize("case, message", [
    ("no_dash", "file name has no '-'"),
    ("no_audio", "No .wav files below"),
    ("mismatch", "--num_classes is 4 but the data holds 3 class(es)"),
    ("backbone", "unknown backbone 'resnot'; closest: resnet"),
])
def test_bad_training_input_is_one_clear_error(tmp_path, case, message, capsys):
    data = tmp_path / "d"
    make_call_set(str(data), {"K1": 6, "K2": 6, "noise": 6}, tapes_per_class=3, sr=16000, duration=0.2)
    extra = []
    if case == "no_dash":
        write_clip(str(data / "K1" / "K1x_1_2019_T_1_2.wav"), np.zeros(800) + 0.1, 16000)
    elif case == "no_audio":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "backbone":
        extra = ["--backbone", "resnot"]
    status = train_on(data, tmp_path, *extra) if case != "mismatch" else train_on(data, tmp_path)
    assert status == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_class_missing_from_training_is_named_before_training(tmp_path, capsys):
    data = tmp_path / "d"
    make_call_set(str(data), {"K1": 20, "K2": 20, "rare": 1, "noise": 20}, tapes_per_class=10, sr=16000,
                  duration=0.2)
    train_on(data, tmp_path)
    err = capsys.readouterr().err
    assert "Class rare has no files in partition(s)" in err
    assert err.index("Class rare has no files") < err.index("Start training")


def test_a_checkpoint_of_another_backbone_is_one_clear_error(tmp_path, call_set, capsys):
    assert train_main.main(run_args(call_set, tmp_path, "0", epochs=1)) == 0
    assert train_main.main(run_args(call_set, tmp_path, "0", epochs=2) + ["--backbone", "mobilenet_v3_large"]) == 1
    err = capsys.readouterr().err
    assert "Checkpoint has different parameters" in err or "fits no known parameter order" in err
    assert "Traceback" not in err


def test_unwritable_output_folder_stops_before_training(tmp_path, call_set, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "model_dir").write_text("a file, not a folder")
    status = train_main.main(["--data_dir", str(call_set), "--model_dir", str(locked / "model_dir" / "m"),
                              "--num_classes", "4", "--max_train_epochs", "1"] + SMALL)
    assert status == 1
    err = capsys.readouterr().err
    assert "--model_dir" in err and "cannot write there" in err and "train|0|" not in err


# ------------------------------------------------------------------ model file safety
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    make_call_set(str(root / "data"), {"target": 10, "noise": 10}, tapes_per_class=5, sr=16000, duration=0.2)
    assert train_main.main(["--data_dir", str(root / "data"), "--model_dir", str(root / "m"), "--num_classes", "2",
                            "--max_train_epochs", "1", "--num_workers", "0", "--summary_dir", str(root / "tb")]
                           + SMALL) == 0
    make_recording(str(root / "rec.wav"), 2.0, 16000, [("upsweep", 0.5)])
    return root


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/animal_spot_code_ran_marker"


def test_files_that_would_run_code_are_refused(tmp_path, small_model):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    raw = tmp_path / "raw.pk"
    with open(raw, "wb") as handle:
        pickle.dump({"encoderOpts": Boom()}, handle)
    zipped = tmp_path / "zipped.pk"
    state = torch.load(small_model / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    state["dataOpts"] = Boom()
    torch.save(state, zipped)
    for path in (raw, zipped):
        with pytest.raises(ModelFileError, match="cannot load it as a model dictionary"):
            load_model(str(path))
        assert predict.main(["--model_path", str(path), "--input_file", str(small_model / "rec.wav"),
                             "--no_progress"]) == 1
    model = load_model(str(small_model / "m" / "ANIMAL-SPOT.pk")).model.eval()
    traced = torch.jit.trace(model, torch.rand(1, 1, 50, 32))
    jit = tmp_path / "evil.pk"
    torch.jit.save(traced, str(jit), _extra_files={"dataOpts": f"__import__('os').system('touch {MARKER}')",
                                                    "classes": "{'noise': 0, 'target': 1}"})
    with pytest.raises(ModelFileError, match="neither JSON nor a Python literal"):
        load_model(str(jit), jit=True)
    assert predict.main(["--model_path", str(jit), "--jit_load", "--input_file", str(small_model / "rec.wav"),
                         "--no_progress"]) == 1
    assert not os.path.exists(MARKER)


def test_model_file_versions(tmp_path, small_model, capsys):
    state = torch.load(small_model / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    state["formatVersion"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pk"
    torch.save(state, newer)
    with pytest.raises(ModelFileError, match="newer version"):
        load_model(str(newer))
    other = tmp_path / "checkpoint_as_model.pk"
    torch.save({"modelState": {}, "trainState": {}}, other)
    assert predict.main(["--model_path", str(other), "--input_file", str(small_model / "rec.wav"),
                         "--no_progress"]) == 1
    assert "not an ANIMAL-SPOT model file (missing encoderOpts" in capsys.readouterr().err


def test_prediction_on_a_file_shorter_than_one_window(tmp_path, small_model, capsys):
    short = tmp_path / "short.wav"
    write_clip(str(short), 0.2 * np.sin(np.arange(1000) / 3), 16000)                 # 62.5 ms
    assert predict.main(["--model_path", str(small_model / "m" / "ANIMAL-SPOT.pk"), "--input_file", str(short),
                         "--output_dir", str(tmp_path / "o"), "--sequence_len", "0.5", "--no_progress"]) == 0
    text = (tmp_path / "o" / "short_predict_output.log").read_text()
    assert len(re.findall(r"time=0.0-0.062, pred=\d, prob=", text)) == 1
    assert "shorter than one window" in capsys.readouterr().err


def test_unwritable_prediction_output(tmp_path, small_model, capsys):
    (tmp_path / "file").write_text("x")
    assert predict.main(["--model_path", str(small_model / "m" / "ANIMAL-SPOT.pk"), "--input_file",
                         str(small_model / "rec.wav"), "--output_dir", str(tmp_path / "file" / "o"),
                         "--no_progress"]) == 1
    assert "--output_dir" in capsys.readouterr().err


def test_launchers_exit_non_zero(tmp_path):
    for folder, script in (("TRAINING", "start_training.py"), ("PREDICTION", "start_prediction.py"),
                           ("EVALUATION", "start_evaluation.py")):
        cfg = tmp_path / f"{folder}.cfg"
        cfg.write_text("model_path=/nonexistent.pk\ninput_file=/nonexistent.wav\ndata_dir=/nonexistent\n"
                       "prediction_dir=/nonexistent\noutput_dir=/tmp/x\nthreshold=0.5\nmodel_dir=/tmp/y\n")
        result = subprocess.run([sys.executable, os.path.join(ROOT, folder, script), str(cfg)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode != 0, (script, result.stderr[-500:])
        assert "Traceback" not in result.stderr
