"""Training that holds up on real recordings: the run configuration stored whole, the
monitored metric, the new augmentation drawn from the run's generators (exact after a
resume), cross-validation by tape, and the unknown answer on a class held out of
training."""

import dataclasses
import json
import os
import random
import re

import numpy as np
import pytest
import torch

import main as train_main
from conftest import small_run
from data.augment import BackgroundOverlay, SpecAugment
from trainer import mixup
from data.filenames import tape_key
from utils.seeding import batch_generator, item_rng


# ------------------------------------------------------------------ configuration
def test_every_option_is_stored_by_its_flag_name(trained):
    options = torch.load(trained / "m" / "ANIMAL-SPOT.pk", weights_only=True)["trainOpts"]
    metrics = json.loads((trained / "m" / "metrics.json").read_text())
    assert metrics["options"] == options
    parser = train_main.build_parser()
    flags = {a.option_strings[0].lstrip("-") if a.option_strings[0].startswith("--") else
             [s for s in a.option_strings if s.startswith("--")][0].lstrip("-")
             for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags <= set(options)                     # a new flag is recorded without anyone copying it
    assert options["monitor"] == "balanced_accuracy" and options["max_pool"] == 2 and options["n_freq_bins"] == 64
    assert options["background_snr"] == [0.0, 20.0] and options["no_cuda"] is False
    config = train_main.parse(["--data_dir", "d", "--model_dir", "m"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0                               # frozen
    assert config.replace(model_dir="x").model_dir == "x" and config.model_dir == "m"


def test_best_weights_are_chosen_by_the_monitored_metric(trained):
    log = (trained / "l" / "TRAIN.log").read_text()
    metrics = json.loads((trained / "m" / "metrics.json").read_text())
    best = metrics["best_val"]
    assert best["monitor"] == "balanced_accuracy"
    assert f"best weights by balanced_accuracy: {best['balanced_accuracy']:.3f} at epoch {best['epoch']}" in log
    lines = re.findall(r"\|val\|(\d+)\|loss:[\d.]+\|accuracy:[\d.]+\|mean_per_class_acc:([\d.]+)", log)
    values = {int(e): float(v) for e, v in lines}
    first_best = min(e for e, v in values.items() if v == max(values.values()))
    assert best["epoch"] == first_best                  # strictly better only: the first of equal values


# ------------------------------------------------------------------- augmentation
def test_new_augmentation_draws_come_from_the_items_generator():
    x = torch.rand(1, 40, 32)
    masks = SpecAugment(time_masks=2, time_width=10, freq_masks=2, freq_width=8)
    a, b = masks(x, item_rng(1, 3, 7)), masks(x, item_rng(1, 3, 7))
    assert torch.equal(a, b) and not torch.equal(a, masks(x, item_rng(1, 4, 7)))
    masked = (a == 0) & (x != 0)
    assert masked.any() and torch.equal(a[~masked], x[~masked])
    cols = masked[0].all(dim=0).sum() + masked[0].all(dim=1).sum()
    assert cols > 0                                    # whole bands and whole stretches, not scattered bins

    signal, noise = torch.full((1, 50, 16), 2.0), torch.rand(1, 30, 16) + 0.5
    overlay = BackgroundOverlay(["n.wav"], lambda path: noise, snr_db=(6.0, 6.0))
    mixed = overlay(signal, random.Random(0))
    added = mixed - signal
    assert 10 * np.log10(float(signal.sum()) / float(added.sum())) == pytest.approx(6.0, abs=1e-4)

    inputs = torch.rand(8, 1, 5, 4)
    m1, p1, l1 = mixup(inputs, 0.4, batch_generator(7, 2, 3, "mixup"))
    m2, p2, l2 = mixup(inputs, 0.4, batch_generator(7, 2, 3, "mixup"))
    assert torch.equal(m1, m2) and torch.equal(p1, p2) and l1 == l2 and 0 < l1 < 1
    torch.testing.assert_close(m1, l1 * inputs + (1 - l1) * inputs[p1])


def run_args(data, out, *extra):
    return ["--data_dir", str(data), "--model_dir", str(out / "m"), "--checkpoint_dir", str(out / "c"),
            "--log_dir", str(out / "l"), "--num_classes", "4"] + small_run(200, 3, 0, "--no_progress") + list(extra)


def test_a_resumed_run_with_the_new_augmentation_is_the_uninterrupted_run(tmp_path, call_set):
    def augmented(run, epochs):
        return run_args(call_set, tmp_path / run, "--augmentation", "--spec_augment", "--mixup", "0.4",
                        "--background_from_noise_class", "--background_snr", "3", "9", "--max_train_epochs", str(epochs))
    assert train_main.main(augmented("whole", 3)) == 0
    assert train_main.main(augmented("parts", 2)) == 0          # stopped after epoch 1 ...
    assert train_main.main(augmented("parts", 3)) == 0          # ... and resumed
    assert "Resuming with epoch 2" in (tmp_path / "parts" / "l" / "TRAIN.log").read_text()
    whole = torch.load(tmp_path / "whole" / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    parts = torch.load(tmp_path / "parts" / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    for key, value in whole["encoderState"].items():
        torch.testing.assert_close(parts["encoderState"][key], value, rtol=0, atol=1e-6, msg=key)
    lines = lambda run: [line.split("|", 1)[1] for line in (tmp_path / run / "l" / "TRAIN.log").read_text()
                         .splitlines() if "|train|2|" in line or "|test|0|" in line]
    strip = lambda rows: [re.sub(r"\|t:[\d.]+", "", r) for r in rows]
    assert strip(lines("whole")) == strip(lines("parts")) != []


# -------------------------------------------------------------- cross-validation
def test_cross_validation_by_tape(tmp_path, train_set):
    out = tmp_path / "cv"
    argv = run_args(train_set, out, "--folds", "3", "--max_train_epochs", "1", "--summary_dir", str(out / "tb"))
    assert train_main.main(argv) == 0
    assert not any(os.path.exists(train_set / p) for p in ("train", "val", "test"))   # the data folder's split untouched
    plan = json.loads((out / "m" / "folds.json").read_text())["splits"]
    tests = [{tape_key(f) for f in fold["test"]} for fold in plan]
    everything = {tape_key(f) for fold in plan for p in ("train", "val", "test") for f in fold[p]}
    assert set().union(*tests) == everything and sum(len(t) for t in tests) == len(everything)   # disjoint cover
    for fold in plan:
        tapes = {p: {tape_key(f) for f in fold[p]} for p in ("train", "val", "test")}
        assert not (tapes["train"] & tapes["val"]) and not (tapes["train"] | tapes["val"]) & tapes["test"]
        assert {f.split("/")[0] for f in fold["test"]} == {"K1", "K2", "K3", "noise"}       # stratified
    for k in (1, 2, 3):
        for folder in ("m", "c", "l", "tb"):
            assert (out / folder / f"fold_{k}").is_dir()
        assert (out / "m" / f"fold_{k}" / "ANIMAL-SPOT.pk").is_file()
    summary = json.loads((out / "m" / "cv_summary.json").read_text())
    folds = [json.loads((out / "m" / f"fold_{k}" / "metrics.json").read_text())["test"] for k in (1, 2, 3)]
    mean = summary["mean"]
    assert mean["balanced_accuracy"] == pytest.approx(np.mean([f["balanced_accuracy"] for f in folds]))
    lo, hi = mean["balanced_accuracy_ci95"]
    assert lo <= mean["balanced_accuracy"] <= hi and len(mean["per_class"]["K1"]["recall_ci95"]) == 2
    pooled = np.sum([f["confusion_matrix"] for f in folds], axis=0)
    assert summary["pooled"]["confusion_matrix"] == pooled.tolist()
    assert summary["pooled"]["samples"] == sum(len(fold["test"]) for fold in plan)
    log = (out / "l" / "TRAIN.log").read_text()
    assert "cross-validation over 3 folds by tape" in log and (out / "l" / "fold_2" / "TRAIN.log").is_file()
    os.remove(out / "m" / "fold_3" / "metrics.json")          # killed in the last fold, after its checkpoint
    assert train_main.main(argv) == 0
    log = (out / "l" / "TRAIN.log").read_text()
    assert "Fold 1 of 3: finished earlier" in log and "Fold 2 of 3: finished earlier" in log
    assert "Resuming with epoch 1" in (out / "l" / "fold_3" / "TRAIN.log").read_text()
    assert json.loads((out / "m" / "cv_summary.json").read_text())["pooled"] == summary["pooled"]


# ---------------------------------------------------------------- unknown answer
def clip_unknown_share(trained, folder, classes):
    from data.audiodataset import Dataset
    from data.features import FeatureOptions
    from data.filenames import find_audio_files
    from evaluation.calibration import is_unknown
    from models.model_file import load_model

    loaded = load_model(str(trained / "m" / "ANIMAL-SPOT.pk"))
    model = loaded.model.eval()
    files = find_audio_files(str(folder))
    dataset = Dataset(files, str(folder), None, classes, seq_len=loaded.spec.train_opts["seq_frames"],
                      options=FeatureOptions.from_data_opts(loaded.spec.data_opts))
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([dataset[i][0] for i in range(len(dataset))])), dim=1)
    features = model.classifier.hidden_layer_1.double().numpy()
    return float(is_unknown(loaded.spec.unknown, features, probs.double().numpy()).mean())


def test_a_class_held_out_of_training_is_called_unknown_far_more_often(trained):
    state = torch.load(trained / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    unknown = state["unknown"]
    assert unknown["score"] == "centroid_distance" and unknown["false_rejection"] == 0.05
    assert isinstance(unknown["threshold"], float) and len(unknown["centroids"]) == 4
    metrics = json.loads((trained / "m" / "metrics.json").read_text())
    assert metrics["unknown"]["test"]["clips"] == metrics["test"]["samples"]
    held = clip_unknown_share(trained, trained / "held", ["K8", "K9"])
    known = clip_unknown_share(trained, trained / "data", ["K1", "K2", "K3", "noise"])
    assert held >= known + 0.3 and held >= 3 * known, (held, known)
