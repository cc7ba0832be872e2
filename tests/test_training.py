"""Short CPU training runs on a tiny synthetic multi-class set."""

import glob
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main as train_main
from models.model_file import load_model

SMALL = ["--sr", "16000", "--n_fft", "256", "--hop_length", "64", "--n_freq_bins", "32", "--fmin", "0",
         "--fmax", "8000", "--sequence_len", "200", "--num_workers", "0", "--batch_size", "4",
         "--epochs_per_eval", "1", "--lr", "1e-4", "--seed", "3"]


def train(root, data, extra):
    argv = ["--data_dir", str(data), "--model_dir", str(root / "model"), "--checkpoint_dir",
            str(root / "ckpt"), "--summary_dir", str(root / "tb"), "--log_dir", str(root / "log"),
            "--num_classes", "4"] + SMALL + extra
    return train_main.main(argv)


def scalar_tags(summary_dir):
    tags = set()
    for run in glob.glob(os.path.join(summary_dir, "*")):
        acc = EventAccumulator(run)
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.parametrize("backbone", ["resnet", "convnext"])
def test_two_epoch_run_writes_model_checkpoints_and_per_class_summaries(tmp_path, train_set, backbone):
    assert train(tmp_path, train_set, ["--backbone", backbone, "--max_train_epochs", "2"]) == 0
    model_file = tmp_path / "model" / "ANIMAL-SPOT.pk"
    state = torch.load(model_file, weights_only=True)
    assert set(state) >= {"encoderOpts", "classifierOpts", "dataOpts", "encoderState", "classifierState", "classes"}
    assert state["encoderOpts"]["backbone"] == backbone
    assert state["classes"] == {"K1": 0, "K2": 1, "K3": 2, "noise": 3}
    assert state["classifierOpts"]["input_channels"] == (512 if backbone == "resnet" else 768)
    assert state["dataOpts"]["n_fft"] == 256 and state["dataOpts"]["sr"] == 16000
    loaded = load_model(str(model_file))
    assert loaded.model(torch.rand(2, 1, 50, 32)).shape == (2, 4)
    ckpts = sorted(os.listdir(tmp_path / "ckpt"))
    assert ckpts == ["multi_class_4_classifier_epoch_00000.checkpoint",
                     "multi_class_4_classifier_epoch_00001.checkpoint"]
    tags = scalar_tags(str(tmp_path / "tb"))
    for phase in ("train", "val", "test"):
        assert f"{phase}/mean_per_class_accuracy" in tags
        assert f"{phase}/accuracy" in tags and f"{phase}/epoch_loss" in tags
        for name in ("K1", "K2", "K3", "noise"):
            assert f"{phase}/per_class_accuracy/{name}" in tags
    assert "lr" in tags
    log = (tmp_path / "log" / "TRAIN.log").read_text()
    assert "|I|train|0|loss:" in log and "|I|test|0|K1: " in log and "(n=" in log


def test_resume_continues_with_the_next_epoch(tmp_path, call_set):
    assert train(tmp_path, call_set, ["--max_train_epochs", "2"]) == 0
    assert train(tmp_path, call_set, ["--max_train_epochs", "3"]) == 0
    log = (tmp_path / "log" / "TRAIN.log").read_text()
    assert "Resuming with epoch 2" in log
    assert "|train|2|" in log and "|train|0|" not in log and "|train|1|" not in log
    assert train(tmp_path, call_set, ["--max_train_epochs", "1", "--start_from_scratch"]) == 0
    assert "|train|0|" in (tmp_path / "log" / "TRAIN.log").read_text()


def test_no_checkpoint_dir_and_jit_save(tmp_path, call_set):
    argv = ["--data_dir", str(call_set), "--model_dir", str(tmp_path / "m"), "--num_classes", "4",
            "--max_train_epochs", "1", "--jit_save", "--summary_dir", str(tmp_path / "tb")] + SMALL
    assert train_main.main(argv) == 0
    loaded = load_model(str(tmp_path / "m" / "ANIMAL-SPOT.pk"), jit=True)
    assert loaded.jit and loaded.classes == {"K1": 0, "K2": 1, "K3": 2, "noise": 3}
    assert loaded.data_opts["hop_length"] == 64 and loaded.train_opts["seq_frames"] == 50
    assert loaded.model(torch.rand(1, 1, 50, 32)).shape == (1, 4)


def test_class_count_mismatch_is_one_clear_error(tmp_path, call_set, caplog):
    argv = ["--data_dir", str(call_set), "--model_dir", str(tmp_path / "m"), "--num_classes", "3",
            "--max_train_epochs", "1"] + SMALL
    assert train_main.main(argv) == 1
    assert not (tmp_path / "m").exists()


def test_options_meaningless_for_convnext_warn(tmp_path, call_set, capsys):
    assert train(tmp_path, call_set, ["--backbone", "convnext", "--max_pool", "2", "--max_train_epochs", "1"]) == 0
    assert "--max_pool means nothing for the convnext backbone" in (tmp_path / "log" / "TRAIN.log").read_text()


def test_same_seed_same_split_and_weights(tmp_path, call_set):
    import shutil
    results = []
    for run in ("a", "b"):
        data = tmp_path / f"data_{run}"
        shutil.copytree(call_set, data)
        assert train(tmp_path / run, data, ["--max_train_epochs", "1"]) == 0
        results.append(((data / "train").read_text(), [(data / p).read_text() for p in ("K1/train.csv", "K1/val.csv")
                                                       if (data / p).exists()],
                        torch.load(tmp_path / run / "model" / "ANIMAL-SPOT.pk", weights_only=True)["classifierState"]))
    (idx_a, csv_a, state_a), (idx_b, csv_b, state_b) = results
    assert csv_a == csv_b
    torch.testing.assert_close(state_a["linear.weight"], state_b["linear.weight"])


SCRIPT_AUDIO = ["--sr", "16000", "--n_fft", "256", "--hop_length", "64", "--n_freq_bins", "32", "--fmin", "0",
                "--fmax", "8000", "--sequence_len", "200", "--num_workers", "0", "--max_train_epochs", "1",
                "--epochs_per_eval", "1", "--seed", "1", "--no_cuda"]


@pytest.mark.parametrize("script, lr, extra", [
    ("train_resnet18.sh", "4.00e-05", []),
    ("train_convnext_pretrained.sh", "8.00e-06", ["--pretrained_weights", "WEIGHTS"]),
])
def test_training_scripts_use_their_settings(tmp_path, train_set, script, lr, extra):
    import torchvision
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "WEIGHTS" in extra:
        weights = tmp_path / "convnext_tiny.pth"
        torch.save(torchvision.models.convnext_tiny().state_dict(), weights)
        extra = [str(weights) if e == "WEIGHTS" else e for e in extra]
    env = dict(os.environ, DATA_DIR=str(train_set), OUTPUT_DIR=str(tmp_path / "runs"), NUM_CLASSES="4",
               PYTHON=sys.executable)
    result = subprocess.run(["bash", os.path.join(root, "TRAINING", script)] + SCRIPT_AUDIO + extra,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1 and runs[0].startswith(script[len("train_"):-3] + "_20")
    run = tmp_path / "runs" / runs[0]
    log = (run / "logs" / "TRAIN.log").read_text()
    assert f"|lr:{lr}|" in log                         # lr x batch size 8
    assert (run / "model" / "ANIMAL-SPOT.pk").exists()
    if extra:
        assert "Loaded ImageNet weights" in log
