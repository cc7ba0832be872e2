"""``--amp``: reduced precision where it is faster, and an honest account of what it
changes. On models built so that plain bfloat16 flips windows (two classes tied up to a
hair, a threshold in the middle of the scores, a detector on the fence), over recordings
that start silent, that are loud, and whose level changes, the run's report of how many
sampled windows bfloat16 decided otherwise than float32 is checked against both
precisions computed here. The reduced-precision pass is bfloat16 autocast, which every
x86 CPU runs (emulated where it is not native); the trial's timing is replaced by the
bfloat16 candidate alone, so the test does not depend on this machine's speed."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch

import predict
from prediction import core
from prediction.core import Predictor, PredictionModel
from prediction.decisions import DecisionRule
from prediction.precision import Trial
from utils import runtime
from utils.classmap import ClassMap
from utils.synthetic import call_signal

SCALE = 100.0          # logits of tens: bfloat16 rounds them to steps of 1/16 and more
SR = 16000


def tied(tmp_path, name, classes=None, gap=5e-4, thresholds=None, seed=0):
    """A small untrained network whose K2 head is a hair from K1's (or a detector:
    target = K1's head, noise = K1's plus a hair): close calls everywhere."""
    from data.features import FeatureOptions
    from models.model_file import ModelSpec, classifier_options, save_model

    classes = classes or {"K1": 0, "K2": 1, "noise": 2}
    encoder = {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}
    options = FeatureOptions(sr=SR, n_fft=256, hop_length=64, n_freq_bins=32, fmin=0, fmax=8000)
    spec = ModelSpec(encoder, classifier_options(encoder, len(classes)), options.data_opts(), classes,
                     {"sequence_len": 200}, thresholds, 0.7 if thresholds else None)
    torch.manual_seed(seed)
    model = spec.build()
    with torch.no_grad():
        weight, bias = model.classifier.linear.weight, model.classifier.linear.bias
        weight.copy_(SCALE * torch.randn(weight.shape) / weight.shape[1] ** 0.5)
        bias.zero_()
        hair = gap * SCALE * torch.randn(weight.shape[1]) / weight.shape[1] ** 0.5
        first, second = (0, 1) if len(classes) > 2 else (1, 0)
        weight[second] = weight[first] + hair
        if len(classes) > 2:
            weight[2], bias[2] = weight[first], -3.0              # noise never quite wins: calls are detected
    path = tmp_path / f"{name}.pk"
    save_model(str(path), model.eval(), spec)
    return str(path)


def recording(path, level):
    """6 s with three calls; ``level``: quiet (2.5 s of digital silence first), loud (x30)
    or changing (a gain rising from 0.01 to 10)."""
    rng = np.random.default_rng(9)
    signal = 0.01 * rng.standard_normal(6 * SR)
    for shape, start in (("upsweep", 3.0), ("downsweep", 4.0), ("pulses", 5.0)):
        signal[int(start * SR):int(start * SR) + int(0.3 * SR)] += call_signal(shape, int(0.3 * SR), SR, rng)
    if level == "quiet":
        signal[:int(2.5 * SR)] = 0.0
    elif level == "loud":
        signal *= 30.0
    else:
        signal *= np.geomspace(0.01, 10.0, len(signal))
    sf.write(path, signal.astype(np.float32), SR, subtype="FLOAT")
    return path


@pytest.fixture
def bfloat16_only(monkeypatch):
    """--amp takes bfloat16 whatever its speed here (the trial's choice is tested in test_scale),
    and every other window is checked (a run checks every 32nd: too few in 6 s to see a flip)."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(core, "CHECK_EVERY", 2)
    monkeypatch.setattr(Trial, "of", classmethod(lambda cls, fmt, precision: cls([("contiguous", precision)])))


def sampled_disagreement(model, path, rule, class_map, detector=None, detector_threshold=None):
    """(differing, checked) of the sampled windows, from float32 and bfloat16 runs here."""
    def probs(precision):
        open_ = lambda p: PredictionModel.open(p, precision=precision, memory_format="contiguous")
        predictor = Predictor([open_(m) for m in model.split(",")], 0.2, 0.1, 8, open_(detector) if detector else None,
                              detector_threshold, prefetch=False)
        return predictor.predict_file(path)[0]
    p32, p16 = probs(runtime.Precision()), probs(runtime.Precision(torch.bfloat16))
    rows = range(0, len(p32), core.CHECK_EVERY)
    differing = sum(rule.decide(list(p32[i]), class_map) != rule.decide(list(p16[i]), class_map) for i in rows)
    return differing, len(rows), int((p32.argmax(1) != p16.argmax(1)).sum())


def run(model, path, out, *extra):
    argv = ["--model_path"] + model.split(",") + ["--input_file", path, "--output_dir", str(out), "--sequence_len",
                                                  "0.2", "--hop", "0.1", "--num_workers", "0", "--no_progress",
                                                  "--raven", "--batch_size", "8"] + list(extra)
    assert predict.main(argv) == 0


def reported(text):
    found = re.search(r"--amp: (\d+) of (\d+) sampled windows", text)
    assert found, text[-2000:]
    return int(found.group(1)), int(found.group(2))


@pytest.mark.parametrize("level", ["quiet", "loud", "changing"])
def test_the_run_reports_what_bfloat16_decided_otherwise(tmp_path, bfloat16_only, capsys, level):
    path = recording(str(tmp_path / f"{level}.wav"), level)
    model = tied(tmp_path, "tied", gap=2e-4)                     # ties close enough to flip on every ISA tried
    class_map = ClassMap.from_dict({"K1": 0, "K2": 1, "noise": 2})
    differing, checked, flips = sampled_disagreement(model, path, DecisionRule(0.4), class_map)
    assert flips >= 3 and differing >= 1 and checked == 30       # plain bfloat16 changes answers here
    capsys.readouterr()
    run(model, path, tmp_path / "amp", "--amp", "--threshold", "0.4")
    assert reported(capsys.readouterr().err) == (differing, checked)


def test_a_detector_on_the_fence_is_part_of_the_account(tmp_path, bfloat16_only, capsys):
    path = recording(str(tmp_path / "changing.wav"), "changing")
    detector = tied(tmp_path, "detector", classes={"noise": 0, "target": 1}, gap=5e-4)
    model = tied(tmp_path, "classifier", seed=2)
    target = Predictor([PredictionModel.open(detector, memory_format="contiguous")], 0.2, 0.1, 8,
                       prefetch=False).predict_file(path)[0][:, 1]
    fence = float(np.median(target))                                        # half the windows pass
    class_map = ClassMap.from_dict({"K1": 0, "K2": 1, "noise": 2})
    differing, checked, _ = sampled_disagreement(model, path, DecisionRule(0.4), class_map, detector, fence)
    assert differing >= 1
    capsys.readouterr()
    run(model, path, tmp_path / "damp", "--amp", "--detector_path", detector, "--detector_threshold", str(fence),
        "--threshold", "0.4")
    assert reported(capsys.readouterr().err) == (differing, checked)


def test_the_strongest_channel_of_a_stereo_recording_is_part_of_the_account(tmp_path, bfloat16_only, capsys):
    left, right = (sf.read(recording(str(tmp_path / f"{level}.wav"), level))[0] for level in ("changing", "quiet"))
    path = str(tmp_path / "stereo.wav")
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), SR, subtype="FLOAT")
    model = tied(tmp_path, "tied", gap=2e-4)
    class_map, rule = ClassMap.from_dict({"K1": 0, "K2": 1, "noise": 2}), DecisionRule(0.4)

    def strongest(precision):        # per window the channel whose top class is most probable
        predictor = Predictor([PredictionModel.open(model, precision=precision, memory_format="contiguous")], 0.2,
                              0.1, 8, prefetch=False)
        channels = np.stack([np.concatenate([b.probs.numpy() for b in predictor.stream(path, channel=c)])
                             for c in (1, 2)])
        return channels[channels.max(axis=2).argmax(axis=0), np.arange(channels.shape[1])]
    p32, p16 = strongest(runtime.Precision()), strongest(runtime.Precision(torch.bfloat16))
    rows = range(0, len(p32), core.CHECK_EVERY)
    differing = sum(rule.decide(list(p32[i]), class_map) != rule.decide(list(p16[i]), class_map) for i in rows)
    assert differing >= 1
    capsys.readouterr()
    run(model, path, tmp_path / "max", "--amp", "--threshold", "0.4", "--channels", "max")
    assert reported(capsys.readouterr().err) == (differing, len(rows))


def test_float32_runs_report_nothing_and_are_not_sampled(tmp_path, capsys):
    path = recording(str(tmp_path / "loud.wav"), "loud")
    run(tied(tmp_path, "tied"), path, tmp_path / "f32", "--threshold", "0.5")
    assert "sampled windows" not in capsys.readouterr().err
