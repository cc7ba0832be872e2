"""``--amp`` decides exactly as float32: on models built so that plain bfloat16 flips
windows (two classes tied up to a hair, a threshold in the middle of the scores, a
detector on the fence), every decision, every log's class and every Raven row equals
float32's. The reduced-precision pass is bfloat16 autocast, which every x86 CPU runs
(emulated where it is not native)."""

import numpy as np
import pytest
import torch

import predict
from prediction.core import Predictor, PredictionModel
from evaluation.log_format import parse_log
from utils import runtime
from utils.synthetic import make_recording


SCALE = 100.0          # logits of tens: bfloat16 rounds them to steps of 1/16 and more


def tied(tmp_path, name, classes=None, gap=5e-4, thresholds=None, seed=0):
    """A small untrained network whose K2 head is a hair from K1's (or a detector:
    target = K1's head, noise = K1's plus a hair): close calls everywhere."""
    from data.features import FeatureOptions
    from models.model_file import ModelSpec, classifier_options, save_model

    classes = classes or {"K1": 0, "K2": 1, "noise": 2}
    encoder = {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}
    options = FeatureOptions(sr=16000, n_fft=256, hop_length=64, n_freq_bins=32, fmin=0, fmax=8000)
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


def decisions(log_path):
    log = parse_log(log_path)
    return [(k, r.flag, r.label, r.unknown) for k, r in log.windows.items()]


@pytest.fixture
def recording(tmp_path):
    path = str(tmp_path / "rec.wav")
    make_recording(path, 6.0, 16000, [("upsweep", 1.0), ("downsweep", 2.5), ("pulses", 4.0)], seed=9, call_len=0.3)
    return path


def run(model, recording, out, *extra):
    argv = ["--model_path"] + model.split(",") + ["--input_file", recording, "--output_dir", str(out),
                                                  "--sequence_len", "0.2", "--hop", "0.1", "--num_workers", "0",
                                                  "--memory_format", "contiguous", "--no_progress", "--raven",
                                                  "--batch_size", "8"] + list(extra)
    assert predict.main(argv) == 0
    return out


def test_plain_bfloat16_flips_windows_that_amp_decides_as_float32(tmp_path, recording, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    model = tied(tmp_path, "tied")
    full = Predictor([PredictionModel.open(model, memory_format="contiguous")], 0.2, 0.1, 8, prefetch=False)
    plain = Predictor([PredictionModel.open(model, precision=runtime.Precision(torch.bfloat16),
                                            memory_format="contiguous")], 0.2, 0.1, 8, prefetch=False)
    p32, p16 = full.predict_file(recording)[0], plain.predict_file(recording)[0]
    flips = int((p32.argmax(1) != p16.argmax(1)).sum())
    assert flips >= 3, flips                                   # what plain bfloat16 does on this model
    calls = p32[p32.argmax(1) != 2]
    middle = float(np.median(calls.max(1)))                     # half the call windows close to the threshold
    calibrated = tied(tmp_path, "calibrated", thresholds={"K1": middle, "K2": middle})
    for name, models, extra in (("rule", model, ["--threshold", str(middle)]), ("model", calibrated, []),
                                ("ensemble", f"{model},{tied(tmp_path, 'tied_b', gap=1e-3, seed=1)}",
                                 ["--threshold", str(middle)])):
        ours = run(models, recording, tmp_path / f"{name}_32", *extra)
        amp = run(models, recording, tmp_path / f"{name}_amp", "--amp", *extra)
        assert decisions(str(amp / "rec_predict_output.log")) == decisions(str(ours / "rec_predict_output.log"))
        assert (amp / "rec.Table.1.selections.txt").read_text() == (ours / "rec.Table.1.selections.txt").read_text()
        assert len((ours / "rec.Table.1.selections.txt").read_text().splitlines()) > 1, name
    report = [line for line in capsys.readouterr().err.splitlines() if "computed in float32" in line]
    assert len(report) == 3                                       # one per --amp run, with the share recomputed


def test_a_detector_on_the_fence_gates_as_float32(tmp_path, recording, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    detector = tied(tmp_path, "detector", classes={"noise": 0, "target": 1}, gap=5e-4)
    target = Predictor([PredictionModel.open(detector, memory_format="contiguous")], 0.2, 0.1, 8,
                       prefetch=False).predict_file(recording)[0][:, 1]
    plain = Predictor([PredictionModel.open(detector, precision=runtime.Precision(torch.bfloat16),
                                            memory_format="contiguous")], 0.2, 0.1, 8,
                      prefetch=False).predict_file(recording)[0][:, 1]
    fence = float(np.median(target))                                        # half the windows pass
    assert int(((target >= fence) != (plain >= fence)).sum()) >= 3          # plain bfloat16 gates differently
    model = tied(tmp_path, "classifier", seed=2)                           # K1 and K2 near 0.5: detections
    extra = ["--detector_path", detector, "--detector_threshold", str(fence), "--threshold", "0.4"]
    ours = run(model, recording, tmp_path / "d32", *extra)
    amp = run(model, recording, tmp_path / "damp", "--amp", *extra)
    assert decisions(str(amp / "rec_predict_output.log")) == decisions(str(ours / "rec_predict_output.log"))
    assert (amp / "rec.Table.1.selections.txt").read_text() == (ours / "rec.Table.1.selections.txt").read_text()
