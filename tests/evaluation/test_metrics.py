import math

import numpy as np
import pytest
import torch

from utils.early_stopping import EarlyStoppingCriterion
from evaluation.metrics import METRICS, PassMetrics, wilson_interval
from evaluation.original_metrics import (Accuracy, F1Score, FPR, FalseNegatives, Max, Mean, PerClassAccuracy, Precision,
                                         Recall, Sum, TruePositives)


def test_per_class_accuracy_keeps_the_seed_api():
    metric = PerClassAccuracy(num_classes=4, device="cpu")
    metric.update(torch.tensor([0, 0, 0, 1, 1, 3]), torch.tensor([0, 0, 1, 1, 0, 2]))
    metric.update(torch.tensor([0]), torch.tensor([0]))
    acc = metric.get()
    assert isinstance(acc, list) and len(acc) == 4
    assert acc[0] == pytest.approx(3 / 4) and acc[1] == pytest.approx(1 / 2) and acc[3] == 0.0
    assert math.isnan(acc[2])                        # no sample of class 2: NaN, not the seed's 0.0
    assert str(metric) == str(acc)
    assert metric.counts.tolist() == [4, 2, 0, 1]
    assert metric.mean() == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    rows = metric.table(["K1", "K14", "K21", "noise"])
    assert rows[0].startswith("K1: 75.0% (n=4)") and rows[2].startswith("K21: n/a (n=0)")
    metric.reset("cpu")
    assert metric.counts.sum() == 0 and math.isnan(metric.mean())


def test_per_class_accuracy_sample_weights():
    metric = PerClassAccuracy(2, "cpu")
    metric.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), weights=torch.tensor([3.0, 1.0, 2.0]))
    assert metric.get() == [pytest.approx(0.75), pytest.approx(1.0)]


def test_binary_metrics_in_the_original_order():
    m = PassMetrics(2)
    m.update(torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 1, 0, 1, 0]))
    r = METRICS.line(m)
    assert list(r) == ["tp", "tn", "fp", "fn", "accuracy", "f1", "precision", "TPR", "FPR"]
    assert (r["tp"], r["tn"], r["fp"], r["fn"]) == (2, 1, 1, 1)
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["precision"] == pytest.approx(2 / 3) and r["TPR"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3) and r["FPR"] == pytest.approx(0.5)
    only_negatives = PassMetrics(2)
    only_negatives.update(torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert METRICS.line(only_negatives)["precision"] == 0.0
    assert list(METRICS.line(PassMetrics(5))) == ["accuracy", "mean_per_class_acc"]


def hand_matrix():
    """Rows true K1, K14, noise; columns predicted. K14: 5 of 6 right, 7 predicted K14."""
    pairs = [(0, 0)] * 8 + [(0, 1)] * 2 + [(1, 1)] * 5 + [(1, 2)] + [(2, 2)] * 9 + [(2, 0)]
    m = PassMetrics(3, keep_samples=True)
    m.update(torch.tensor([t for t, _ in pairs]), torch.tensor([p for _, p in pairs]))
    return m


def test_per_class_figures_on_a_hand_computed_matrix():
    m = hand_matrix()
    assert m.matrix.tolist() == [[8, 2, 0], [0, 5, 1], [1, 0, 9]]
    assert m.recall().tolist() == pytest.approx([0.8, 5 / 6, 0.9])
    assert m.precision().tolist() == pytest.approx([8 / 9, 5 / 7, 0.9])
    f1 = [2 * 8 / (16 + 1 + 2), 2 * 5 / (10 + 2 + 1), 2 * 9 / (18 + 1 + 1)]
    assert m.f1().tolist() == pytest.approx(f1)
    assert m.macro_f1() == pytest.approx(sum(f1) / 3)
    assert m.balanced_accuracy() == pytest.approx((0.8 + 5 / 6 + 0.9) / 3)
    assert m.accuracy() == pytest.approx(22 / 26)
    row = m.table(["K1", "K14", "noise"], intervals=True)[1]
    assert row == "K14: 83.3% [43.6-97.0] (n=6) P 71.4% F1 76.9%"


def test_wilson_interval_hand_computed():
    lo, hi = wilson_interval(5, 6)             # p = 5/6, z = 1.96
    assert (round(lo * 100, 1), round(hi * 100, 1)) == (43.6, 97.0)
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(4, 4)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_the_balanced_accuracy_interval_is_reproducible_and_brackets_the_estimate():
    m = hand_matrix()
    first, second = m.balanced_accuracy_interval(), m.balanced_accuracy_interval()
    assert first == second
    assert first[0] < m.balanced_accuracy() < first[1] and 0.5 < first[0] and first[1] <= 1.0
    summary = m.summary(["K1", "K14", "noise"], intervals=True)
    assert summary["balanced_accuracy_ci95"] == pytest.approx(list(first))
    assert summary["per_class"]["K14"]["recall_ci95"] == pytest.approx(list(wilson_interval(5, 6)))


def test_the_balanced_accuracy_interval_holds_its_estimate_and_covers_simulated_truth():
    """Test sets drawn with known per-class recalls: the interval holds the estimate on
    every draw, never collapses at perfect scores, and covers the true balanced accuracy
    at about its 95 % (the percentile bootstrap it replaces: 5.5 % with 3 and 2 clips of
    nearly perfect classes, 15.5 % with 5 clips of three 99 % classes)."""
    from evaluation.intervals import mean_of_proportions

    perfect = PassMetrics(3)
    perfect.update(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 0, 1, 2, 2]))
    low, high = perfect.balanced_accuracy_interval()
    assert perfect.balanced_accuracy() == 1.0 and high == 1.0 and low < 0.9       # 5 windows: far from certain
    rng = np.random.default_rng(1)
    for truth, n, least in (((0.7, 0.85, 0.95), (20, 10, 30), 0.91), ((0.5, 0.9), (8, 40), 0.93),
                            ((0.6, 0.6, 0.6), (100, 100, 100), 0.93), ((1.0, 0.98), (3, 2), 0.92)):
        covered = 0
        for sim in range(400):
            k = rng.binomial(n, truth)
            lo, hi = mean_of_proportions(k, n, draws=2000, seed=sim)
            assert lo <= float(np.mean(k / np.asarray(n))) <= hi
            covered += lo <= np.mean(truth) <= hi
        assert least <= covered / 400 <= 0.99, (truth, n, covered / 400)


def test_roc_auc():
    m = PassMetrics(2)
    m.update(torch.tensor([1, 0, 1, 0]), torch.tensor([1, 1, 0, 0]), scores=torch.tensor([0.9, 0.8, 0.3, 0.1]))
    assert m.roc()[2] == pytest.approx(0.75)
    single = PassMetrics(2)
    single.update(torch.tensor([1]), torch.tensor([1]), scores=torch.tensor([0.9]))
    assert math.isnan(single.roc()[2])


def test_original_metric_objects():
    labels, preds = torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 1, 0, 1, 0])
    values = {}
    for cls in (Accuracy, TruePositives, FalseNegatives, Precision, Recall, FPR, F1Score):
        metric = cls(device="cpu")
        metric.update(labels, preds)
        values[cls.__name__] = metric.get()
        metric.reset()
    assert values == {"Accuracy": pytest.approx(0.6), "TruePositives": 2.0, "FalseNegatives": 1.0,
                      "Precision": pytest.approx(2 / 3), "Recall": pytest.approx(2 / 3), "FPR": 0.5,
                      "F1Score": pytest.approx(2 / 3)}
    total, mean, peak = Sum(), Mean(), Max()
    for metric in (total, mean, peak):
        metric.update(torch.tensor([1.0, 3.0]), weights=torch.tensor([1.0, 3.0]))
    assert (total.get(), mean.get(), peak.get()) == (10.0, 2.5, 3.0)


def test_early_stopping_counts_validations():
    stop = EarlyStoppingCriterion(patience=2)
    assert [stop.step(x) for x in (0.5, 0.5, 0.4, 0.4, 0.6, 0.1, 0.1, 0.1)] == \
        [False, False, False, False, False, False, False, True]
    clone = EarlyStoppingCriterion(patience=9)
    clone.load_state_dict(stop.state_dict())
    assert clone.patience == 2 and clone._count == 3


def test_macro_roc_auc_is_the_share_of_correctly_ordered_pairs():
    from evaluation.metrics import macro_roc_auc, roc_auc_of
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 60)
    probs = np.round(rng.random((60, 3)) + 0.4 * np.eye(3)[labels], 1)     # rounded: many ties
    per_class = []
    for c in range(3):
        pos, neg = probs[labels == c, c], probs[labels != c, c]
        pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        per_class.append(pairs / (len(pos) * len(neg)))
        assert roc_auc_of(probs[:, c], labels == c) == pytest.approx(per_class[-1], abs=1e-12)
    assert macro_roc_auc(probs, labels) == pytest.approx(np.mean(per_class), abs=1e-12)
    assert 0.6 < macro_roc_auc(probs, labels) < 1.0                     # the signal shows, not perfectly
    assert macro_roc_auc(np.eye(3)[labels], labels) == 1.0
    assert macro_roc_auc(probs[labels == 0], labels[labels == 0]) != macro_roc_auc(probs[labels == 0],
                                                                                   labels[labels == 0])  # NaN
