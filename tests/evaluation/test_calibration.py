"""Per-class thresholds and temperature scaling, chosen on hand-made validation logits."""

import logging

import numpy as np
import pytest

from prediction.decisions import DecisionRule
from evaluation.calibration import (calibrate, calibrated_from_probabilities, choose_thresholds,
                               expected_calibration_error, fit_temperature, softmax)
from utils.classmap import ClassMap


def test_thresholds_maximise_each_class_f1():
    # class 0 (K1): top-class probabilities of its windows; labels say which are really K1
    probs = np.array([[0.95, 0.05, 0.0], [0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0], [0.6, 0.4, 0.0],
                      [0.55, 0.45, 0.0], [0.1, 0.85, 0.05], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.5, 0.2],
                      [0.2, 0.2, 0.6], [0.1, 0.1, 0.8], [0.2, 0.75, 0.05]])
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 2, 2, 0])
    chosen = choose_thresholds(probs, labels, ["K1", "K2", "noise"], noise=2)
    # K1 (5 samples, one of them K2-top): 0.6 gives tp 4, fp 1, fn 1 -> F1 0.8; 0.8 gives 0.75, 0.55 0.727
    assert chosen["K1"] == 0.6
    # K2 (6 samples): 0.5 gives tp 4, fp 1, fn 2 -> F1 0.727; 0.6 gives 0.6
    assert chosen["K2"] == 0.5
    assert "noise" not in chosen
    strict = choose_thresholds(probs, labels, ["K1", "K2", "noise"], noise=2, target_precision=1.0)
    assert strict["K1"] == 0.8                       # the lowest threshold with precision 1


def test_small_classes_keep_the_default_with_a_warning(caplog):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    with caplog.at_level(logging.WARNING, logger="ANIMAL-SPOT"):
        chosen = choose_thresholds(probs, np.array([0, 1, 1]), ["noise", "target"], noise=0)
    assert chosen == {"target": 0.5} and "Class target has 2 validation sample(s)" in caplog.text


def test_temperature_scaling_lowers_the_calibration_error():
    rng = np.random.default_rng(0)
    n, classes = 2000, 4
    labels = rng.integers(0, classes, n)
    honest = rng.normal(0, 1, (n, classes))
    honest[np.arange(n), labels] += 1.5              # informative but uncertain
    overconfident = 4.0 * honest                     # the same ranking, far too sure
    t = fit_temperature(overconfident, labels)
    assert 2.0 < t < 5.0                            # recognises the over-confidence
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, t), labels)
    assert after < before / 3
    result = calibrate(overconfident, labels, ["a", "b", "c", "noise"], noise=3)
    assert result["temperature"] == pytest.approx(t) and result["ece_after"] == pytest.approx(after)
    raw = softmax(overconfident[:5])
    np.testing.assert_allclose(calibrated_from_probabilities(raw, t), softmax(overconfident[:5], t), rtol=1e-6)


def test_decision_rules():
    multi = ClassMap.from_names(["K1", "K2", "noise"])
    original = DecisionRule(0.5)
    assert original.decide([0.6, 0.3, 0.1], multi) == 0 and original.decide([0.4, 0.3, 0.3], multi) is None
    assert original.decide([0.1, 0.2, 0.7], multi) is None                      # noise is not a detection
    per_class = DecisionRule(0.5, {"K1": 0.8, "K2": 0.3}, 1.0)
    assert per_class.decide([0.6, 0.3, 0.1], multi) is None and per_class.decide([0.35, 0.4, 0.25], multi) == 1
    binary = ClassMap.from_names(["noise", "target"])
    assert DecisionRule(0.5, {"target": 0.3}, 1.0).decide([0.65, 0.35], binary) == 1
    sharp = DecisionRule(0.5, {"target": 0.3}, 0.5)                               # calibration sharpens 0.35
    assert sharp.decide([0.65, 0.35], binary) is None
