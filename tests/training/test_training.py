"""Short CPU training runs on a tiny synthetic multi-class set."""

import glob
import os
import re
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main as train_main
from models.model_file import load_model
from conftest import small_run  # noqa: E402

SMALL = small_run(200, 3, 0)


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
    # the seed fork's token, just before lr / t, in every phase's line
    assert re.search(r"\|I\|train\|0\|loss:[\d.]+\|accuracy:[\d.]+\|mean_per_class_acc:[\d.]+\|lr:", log)
    assert re.search(r"\|I\|val\|0\|loss:[\d.]+\|accuracy:[\d.]+\|mean_per_class_acc:[\d.]+\|t:", log)
    assert re.search(r"\|I\|test\|0\|K1: [\d.]+% \[[\d.]+-[\d.]+\] \(n=\d+\) P ", log)


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
    assert loaded.data_opts["hop_length"] == 64 and loaded.spec.train_opts["seq_frames"] == 50
    assert loaded.model(torch.rand(1, 1, 50, 32)).shape == (1, 4)


def test_class_count_mismatch_is_one_clear_error(tmp_path, call_set, caplog):
    argv = ["--data_dir", str(call_set), "--model_dir", str(tmp_path / "m"), "--num_classes", "3",
            "--max_train_epochs", "1"] + SMALL
    before = sorted(p.relative_to(call_set) for p in call_set.rglob("*"))
    assert train_main.main(argv) == 1
    assert not (tmp_path / "m").exists()
    assert sorted(p.relative_to(call_set) for p in call_set.rglob("*")) == before     # no split files left behind


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
                "--epochs_per_eval", "1", "--seed", "1", "--no_cuda", "--no_progress"]
SEED_RECIPE = ["--min_max_norm", "--filter_broken_audio", "--start_from_scratch", "--debug", "--epochs_per_eval 2",
               "--augmentation", "--batch_size 8", "--max_train_epochs 150", "--early_stopping_patience_epochs 20",
               "--lr_decay_factor 0.5", "--sequence_len 500", "--sr 44100", "--n_fft 1024", "--hop_length 172",
               "--n_freq_bins 256", "--freq_compression linear", "--fmin 500", "--fmax 10000"]


def run_script(script, env, extra, timeout=600):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run(["bash", os.path.join(root, "TRAINING", script)] + SCRIPT_AUDIO + extra,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script, folder, lr, recipe", [
    ("train_resnet18.sh", "outputs_resnet_", "4.00e-05", ["--backbone resnet --resnet 18", "--lr 5e-6",
                                                          "--beta1 0.5", "--lr_patience_epochs 8"]),
    ("train_convnext_pretrained.sh", "outputs_convnext_", "8.00e-06",
     ["--backbone convnext --pretrained --max_pool 2", "--lr 1e-6", "--beta1 0.9", "--lr_patience_epochs 10"]),
])
def test_training_scripts_are_the_seed_recipe(tmp_path, call_set, script, folder, lr, recipe):
    """The seed fork's flags (spec 13.1), the classes counted when NUM_CLASSES is unset."""
    import torchvision
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = " ".join(open(os.path.join(root, "TRAINING", script)).read().split() +
                    open(os.path.join(root, "TRAINING", "common.sh")).read().split())
    for flags in SEED_RECIPE + recipe:
        assert flags in text, flags
    if script == "train_resnet18.sh":
        assert "--max_pool" not in text.split("run_training resnet", 1)[1]    # the original's default stem
    extra = []
    if "convnext" in script:
        weights = tmp_path / "convnext_tiny.pth"
        torch.save(torchvision.models.convnext_tiny().state_dict(), weights)
        extra = ["--pretrained_weights", str(weights)]
    env = dict(os.environ, DATA_DIR=str(call_set), OUTPUT_DIR=str(tmp_path / "runs"), PYTHON=sys.executable)
    env.pop("NUM_CLASSES", None)
    result = run_script(script, env, extra)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1 and runs[0].startswith(folder + "20")
    run = tmp_path / "runs" / runs[0]
    log = (run / "logs" / "TRAIN.log").read_text()
    assert f"|lr:{lr}|" in log and "Model predict 4 classes" in log    # lr x batch size 8; classes counted
    assert (run / "model" / "ANIMAL-SPOT.pk").exists()
    if extra:
        assert "Loaded ImageNet weights" in log
    if script == "train_resnet18.sh":   # RUN_DIR resumes that run instead of starting a new one
        env["RUN_DIR"] = str(run)
        again = run_script(script, env, ["--max_train_epochs", "2"])
        assert again.returncode == 0, again.stderr[-3000:]
        assert os.listdir(tmp_path / "runs") == runs
        assert "Resuming with epoch 1" in (run / "logs" / "TRAIN.log").read_text()


def test_rare_classes_script_records_its_configuration(tmp_path, call_set):
    env = dict(os.environ, DATA_DIR=str(call_set), OUTPUT_DIR=str(tmp_path / "runs"), PYTHON=sys.executable)
    result = run_script("train_rare_classes.sh", env, ["--sequence_len", "200"])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / os.listdir(tmp_path / "runs")[0]
    options = torch.load(run / "model" / "ANIMAL-SPOT.pk", weights_only=True)["trainOpts"]
    assert options["lr_effective"] == pytest.approx(3e-4) and options["batch_size"] == 64
    assert (options["scheduler"], options["weighted_sampling"], options["label_smoothing"]) == \
        ("onecycle", "sqrt_inverse", 0.1)
    assert "--sequence_len 1000" in open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                                      "TRAINING", "train_rare_classes.sh")).read()


def test_debug_keeps_the_module_tree_in_the_log_not_on_the_console(tmp_path, call_set, capfd):
    assert train(tmp_path, call_set, ["--debug", "--max_train_epochs", "1", "--no_progress"]) == 0
    console = capfd.readouterr().err
    assert "BasicBlock" not in console and "|D|" in console                # debug lines, without the network
    assert "BasicBlock" in (tmp_path / "log" / "TRAIN.log").read_text()


def test_a_frozen_backbone_keeps_every_weight_and_statistic_and_onecycle_keeps_each_groups_rate(tmp_path, call_set,
                                                                                                 trained):
    import types

    from models.model_file import load_model
    from training import factories, listeners

    source = trained / "m" / "ANIMAL-SPOT.pk"
    assert train(tmp_path, call_set, ["--transfer_from", str(source), "--freeze_backbone", "--max_train_epochs", "1",
                                      "--no_progress"]) == 0
    before, after = (load_model(str(p)).model.encoder.state_dict() for p in (source, tmp_path / "model" /
                                                                               "ANIMAL-SPOT.pk"))
    assert all(torch.equal(before[k], after[k]) for k in before)          # BatchNorm's running statistics too
    model = load_model(str(source)).model
    config = types.SimpleNamespace(lr=1e-4, batch_size=8, beta1=0.5, weight_decay=0.0, freeze_backbone=False,
                                   backbone_lr=1e-6)
    processes = types.SimpleNamespace(world=1)
    optimizer = factories.optimizer(config, model, processes)
    listeners.OneCycleScheduler(optimizer, [g["lr"] for g in optimizer.param_groups], 10)
    assert [g["max_lr"] for g in optimizer.param_groups] == pytest.approx([8e-4, 8e-6])     # head first, then network
