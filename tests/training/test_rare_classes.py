"""Imbalance options, their bad input, and the figures a run reports about rare classes."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import main as train_main
from data.samplers import BalancedSampler
from listeners import OneCycleScheduler
from trainer import Batch
from models.losses import class_weights, make_loss, parse_boosts
from utils.synthetic import make_call_set
from conftest import small_run  # noqa: E402

SMALL = small_run(200, 3, 0, "--no_progress", "--memory_format", "contiguous", "--backbone", "mobilenet_v3_small")
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [1.0, -1.0, 2.0]])
TARGET = torch.tensor([0, 2, 1, 2])


def test_class_weights_follow_the_counts():
    counts = [100, 25, 4]
    inverse = class_weights(counts, "inverse")
    raw = [1 / 100, 1 / 25, 1 / 4]
    assert inverse == pytest.approx([w / (sum(raw) / 3) for w in raw])
    assert sum(class_weights(counts, "sqrt_inverse")) == pytest.approx(3.0)
    effective = class_weights(counts, "effective_num")
    raw = [(1 - 0.999) / (1 - 0.999 ** n) for n in counts]
    assert effective == pytest.approx([w / (sum(raw) / 3) for w in raw])
    assert class_weights(counts, "none") == [1.0, 1.0, 1.0]
    assert class_weights(counts, "inverse_freq") == inverse                      # the seed's spelling
    with pytest.raises(ValueError, match="K27"):
        class_weights([10, 0], "inverse", ["K1", "K27"])


def test_class_weights_reach_the_loss():
    weights = [0.5, 1.0, 2.0]
    loss = make_loss("ce", weights)(LOGITS, TARGET)
    log_p = F.log_softmax(LOGITS, dim=1)
    w = torch.tensor(weights)[TARGET]
    expected = -(w * log_p[torch.arange(4), TARGET]).sum() / w.sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_label_smoothing_follows_the_formula():
    eps = 0.1
    loss = make_loss("ce", label_smoothing=eps)(LOGITS, TARGET)
    log_p = F.log_softmax(LOGITS, dim=1)
    expected = ((1 - eps) * -log_p[torch.arange(4), TARGET] + eps * -log_p.mean(dim=1)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    for weights, eps in ((None, 0.0), ([0.5, 1.0, 2.0], 0.0), ([0.5, 1.0, 2.0], 0.1)):
        focal = make_loss("focal", weights, eps, focal_gamma=0.0)(LOGITS, TARGET)
        ce = make_loss("ce", weights, eps)(LOGITS, TARGET)
        assert float(focal) == pytest.approx(float(ce), rel=1e-6)
    down = make_loss("focal", focal_gamma=2.0)(LOGITS, TARGET)
    p = F.softmax(LOGITS, dim=1)[torch.arange(4), TARGET]
    assert float(down) == pytest.approx(float((-(1 - p) ** 2 * p.log()).mean()), rel=1e-6)


def test_balanced_sampler_balances_classes_and_reads_no_audio(monkeypatch):
    import data.audio_io
    monkeypatch.setattr(data.audio_io, "read_audio", lambda *a: (_ for _ in ()).throw(AssertionError("audio read")))
    labels = [0] * 200 + [1] * 40 + [2] * 8
    counts = [200, 40, 8]
    sampler = BalancedSampler(labels, class_weights(counts, "inverse"), seed=1)
    drawn = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        drawn += [labels[i] for i in sampler]
    assert len(list(sampler)) == len(labels)                                   # epoch length unchanged
    n = len(drawn)
    for c in range(3):                                                         # 5 binomial standard deviations
        assert abs(drawn.count(c) / n - 1 / 3) <= 5 * math.sqrt((1 / 3) * (2 / 3) / n)
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first                                              # keyed on (seed, epoch)
    sqrt = BalancedSampler(labels, class_weights(counts, "sqrt_inverse"), seed=1)
    share = [labels[i] for i in sqrt].count(2) / len(labels)
    assert 0.1 < share < 0.3                                                   # 8 sqrt(8) / sum n sqrt(n)


def test_rare_class_boost_parses_the_seed_syntax():
    assert parse_boosts("K14=3,K27=2.5", ["K14", "K27", "noise"]) == {"K14": 3.0, "K27": 2.5}
    with pytest.raises(ValueError, match="unknown class 'K9'"):
        parse_boosts("K9=2", ["K14"])
    with pytest.raises(ValueError, match="CLASS=FACTOR"):
        parse_boosts("K14:2", ["K14"])


def test_one_cycle_lr_curve():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    schedule = OneCycleScheduler(optimizer, peak_lr=3e-4, total_steps=100)
    lrs = [optimizer.param_groups[0]["lr"]]
    for i in range(99):
        optimizer.step()
        schedule.on_batch_end(None, Batch("train", 0, i, None, None, None, 0.0))
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(3e-4 / 25)                         # torch's default start: peak / 25
    assert max(lrs) == pytest.approx(3e-4) and lrs.index(max(lrs)) in range(28, 31)   # peak at 30 %
    assert lrs[-1] < 1e-6 and all(a <= b for a, b in zip(lrs[:29], lrs[1:30]))


@pytest.mark.parametrize("flags, message", [
    (["--focal_gamma", "-1"], "--focal_gamma must be in >= 0.0"),
    (["--label_smoothing", "1.0"], "--label_smoothing must be in [0.0, 1.0)"),
    (["--scheduler", "step"], "invalid choice: 'step'"),
    (["--class_weights", "balanced"], "choose one of none, inverse"),
])
def test_bad_options_are_argparse_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        train_main.build_parser().parse_args(flags)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_class_without_training_files_under_weighting_is_named(tmp_path, capsys):
    import random
    import shutil

    from data.filenames import find_audio_files
    from data.split import PARTITIONS, create_split
    data = tmp_path / "d"
    make_call_set(str(data), {"K1": 20, "K2": 20, "rare": 1, "noise": 20}, tapes_per_class=10, sr=16000,
                  duration=0.2)
    for seed in range(50):               # a split whose only 'rare' file is not in train
        split = create_split(str(data), find_audio_files(str(data)), random.Random(seed))
        if not any(f.startswith("rare") for f in split["train"]) and all(split[p] for p in PARTITIONS):
            break
    for flag in ("--weighted_sampling", "--class_weights"):
        status = train_main.main(["--data_dir", str(data), "--model_dir", str(tmp_path / "m"), "--num_classes", "4",
                                  "--max_train_epochs", "1", flag, "inverse"] + SMALL)
        err = capsys.readouterr().err
        assert status == 1 and "rare have no training files" in err and "Traceback" not in err
    shutil.rmtree(tmp_path / "m", ignore_errors=True)


def test_a_run_with_every_option_records_them_and_its_metrics(tmp_path, train_set):
    argv = ["--data_dir", str(train_set), "--model_dir", str(tmp_path / "m"), "--log_dir", str(tmp_path / "l"),
            "--summary_dir", str(tmp_path / "tb"), "--num_classes", "4", "--max_train_epochs", "2",
            "--class_weights", "sqrt_inverse", "--weighted_sampling", "effective_num", "--loss", "focal",
            "--focal_gamma", "1.5", "--label_smoothing", "0.1", "--grad_clip", "1.0", "--scheduler", "cosine",
            "--weight_decay", "1e-4"] + SMALL
    assert train_main.main(argv) == 0
    options = torch.load(tmp_path / "m" / "ANIMAL-SPOT.pk", weights_only=True)["trainOpts"]
    for key, value in {"class_weights": "sqrt_inverse", "weighted_sampling": "effective_num", "loss": "focal",
                       "focal_gamma": 1.5, "label_smoothing": 0.1, "grad_clip": 1.0, "scheduler": "cosine",
                       "weight_decay": 1e-4}.items():
        assert options[key] == value
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["options"] == options and metrics["seed"] == 3
    assert json.loads(json.dumps(metrics)) == metrics
    test = metrics["test"]
    assert test["classes"] if "classes" in test else metrics["classes"] == ["K1", "K2", "K3", "noise"]
    assert sum(test["per_class"][c]["support"] for c in metrics["classes"]) == test["samples"]
    assert len(test["confusion_matrix"]) == 4 and len(test["balanced_accuracy_ci95"]) == 2
    log = (tmp_path / "l" / "TRAIN.log").read_text()
    assert f"Final test metric: {test['accuracy']:4f}" in log
    assert "Class weights (sqrt_inverse, from the training split):" in log
    calibration = metrics["calibration"]
    assert calibration["temperature"] > 0 and set(calibration["thresholds"]) == {"K1", "K2", "K3"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import glob
    tags = set()
    for run in glob.glob(str(tmp_path / "tb" / "*")):
        accumulator = EventAccumulator(run)
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    for phase in ("val", "test"):
        assert {f"{phase}/macro_f1", f"{phase}/balanced_accuracy", f"{phase}/per_class_f1/K1"} <= tags
        assert any(t.startswith(f"{phase}/per_class_precision/") for t in tags)
