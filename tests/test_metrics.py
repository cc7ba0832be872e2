import math

import pytest
import torch

from utils.early_stopping import EarlyStoppingCriterion
from utils.metrics import ConfusionMatrix, PassMetrics, PerClassAccuracy, RocMeter


def test_per_class_accuracy_hand_computed():
    metric = PerClassAccuracy(4, "cpu")
    metric.update(torch.tensor([0, 0, 0, 1, 1, 3]), torch.tensor([0, 0, 1, 1, 0, 2]))
    metric.update(torch.tensor([0]), torch.tensor([0]))
    acc = metric.compute()
    assert acc[0].item() == pytest.approx(3 / 4)
    assert acc[1].item() == pytest.approx(1 / 2)
    assert math.isnan(acc[2].item())                 # no sample of class 2: not 0
    assert acc[3].item() == 0.0
    assert metric.counts.tolist() == [4, 2, 0, 1]
    assert metric.mean() == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    rows = metric.table(["K1", "K14", "K21", "noise"])
    assert rows[:4] == ["K1: 75.0% (n=4)", "K14: 50.0% (n=2)", "K21: n/a (n=0)", "noise: 0.0% (n=1)"]
    metric.reset()
    assert metric.counts.sum() == 0 and math.isnan(metric.mean())


def test_binary_metrics_in_the_original_order():
    m = PassMetrics(2)
    m.update(torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 1, 0, 1, 0]))
    r = m.compute()
    assert list(r) == ["tp", "tn", "fp", "fn", "accuracy", "f1", "precision", "TPR", "FPR"]
    assert (r["tp"], r["tn"], r["fp"], r["fn"]) == (2, 1, 1, 1)
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["precision"] == pytest.approx(2 / 3) and r["TPR"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3) and r["FPR"] == pytest.approx(0.5)
    only_negatives = PassMetrics(2)
    only_negatives.update(torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert only_negatives.compute()["precision"] == 0.0
    assert list(PassMetrics(5).compute()) == ["accuracy"]


def test_confusion_and_roc():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]))
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert cm.normalized()[0].tolist() == [0.5, 0.5, 0.0]
    roc = RocMeter()
    roc.update(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert roc.curve()[2] == pytest.approx(0.75)
    single = RocMeter()
    single.update(torch.tensor([0.9]), torch.tensor([1]))
    assert math.isnan(single.curve()[2])


def test_early_stopping_counts_validations():
    stop = EarlyStoppingCriterion(patience=2)
    assert [stop.step(x) for x in (0.5, 0.5, 0.4, 0.4, 0.6, 0.1, 0.1, 0.1)] == \
        [False, False, False, False, False, False, False, True]
    clone = EarlyStoppingCriterion(patience=9)
    clone.load_state_dict(stop.state_dict())
    assert clone.patience == 2 and clone._count == 3
