"""Backbones that plug in: every registry entry, torchvision families and timm models by
name, their options and weights, transfer from a trained model, and ONNX export."""

import os
import re
import subprocess
import sys
import urllib.error

import pytest
import torch
import torchvision

import error_bounds
import main as train_main
import predict
from models import backbones
from models.model_file import load_model
from models.timm_encoder import TimmEncoder, TimmModelError
from models.tv_encoder import PretrainedWeightsError, TorchvisionEncoder
from prediction.core import Predictor, PredictionModel
from utils.synthetic import make_call_set
from conftest import small_run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = small_run(200, 3, 0, "--no_progress", "--max_train_epochs", "1", "--memory_format", "contiguous")


@pytest.mark.parametrize("name", list(backbones.REGISTRY))
def test_every_entry_maps_one_channel_to_its_feature_map(name):
    entry = backbones.get(name)
    torch.manual_seed(0)
    encoder = entry.build(dict(entry.defaults), False, None).eval()
    channels = entry.out_channels(dict(entry.defaults))
    with torch.no_grad():
        template = encoder(torch.rand(1, 1, 128, 256))
        small = encoder(torch.rand(2, 1, 32, 64))
    assert template.shape[:2] == (1, channels) and template.dim() == 4 and template.shape[2] * template.shape[3] > 0
    assert small.shape[:2] == (2, channels) and bool(torch.isfinite(small).all())


def test_registry_refuses_duplicates_and_names_close_matches():
    with pytest.raises(ValueError, match="already registered"):
        backbones.register(backbones.REGISTRY["resnet"])
    with pytest.raises(ValueError, match="closest: efficientnet_b4"):
        backbones.get("efficientnet_b44")
    with pytest.raises(TimmModelError, match="closest: resnet10t"):
        backbones.get("timm:resnet10x")
    with pytest.raises(TimmModelError, match="timm model vit_tiny_patch16_224: (its features are not|cannot take)"):
        backbones.get("timm:vit_tiny_patch16_224")


def test_list_backbones(capsys):
    assert train_main.main(["--list_backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[1:]]
    registered = len(backbones.REGISTRY)
    assert names[:registered] == list(backbones.REGISTRY) and names[registered] == "timm:<name>"
    assert [n for n in names[registered + 2:]] == ["birdnet", "batdetect2", "onnx:PATH"]   # foundation encoders
    row = dict(zip(names, lines[1:]))
    assert re.match(r"mobilenet_v3_small\s+576\s+0\.9M\s+yes\s+torchvision", row["mobilenet_v3_small"])
    assert re.match(r"resnet\s+512\s+11\.2M\s+no\s+", row["resnet"])


def test_backbone_options_come_from_the_registry():
    parser = train_main.build_parser()
    assert {"--resnet", "--max_pool", "--conv_kernel_size"} <= {o for a in parser._actions for o in a.option_strings}
    args = parser.parse_args(["--backbone", "resnet", "--resnet", "34", "--conv_kernel_size", "5", "3"])
    import logging
    opts = train_main.encoder_options(args, logging.getLogger("test"))
    assert opts == {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 5, "max_pool": 1,
                    "resnet_size": 34}


def test_torchvision_family_weights_and_offline_error(tmp_path, monkeypatch):
    net = torchvision.models.efficientnet_b0()
    weights = tmp_path / "efficientnet_b0.pth"
    torch.save(net.state_dict(), weights)
    encoder = TorchvisionEncoder("efficientnet_b0", weights_path=str(weights))
    stem = encoder.features[0][0]
    assert stem.in_channels == 1 and stem.bias is None
    torch.testing.assert_close(stem.weight, net.state_dict()["features.0.0.weight"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(encoder.features[3][0].block[0][0].weight,
                               net.state_dict()["features.3.0.block.0.0.weight"])
    import torchvision.models._api as weights_api
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(weights_api, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("no network")))
    with pytest.raises(PretrainedWeightsError) as error:
        TorchvisionEncoder("mobilenet_v3_large", pretrained=True)
    assert "--pretrained_weights" in str(error.value) and str(tmp_path / "empty") in str(error.value)


def test_timm_model_with_local_weights_averages_the_stem(tmp_path):
    import timm
    source = timm.create_model("resnet10t", num_classes=10)
    state = source.state_dict()
    path = tmp_path / "resnet10t.pth"
    torch.save(state, path)
    encoder = TimmEncoder("resnet10t", weights_path=str(path))
    torch.testing.assert_close(encoder.net.conv1[0].weight, state["conv1.0.weight"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(encoder.net.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    with torch.no_grad():
        assert encoder.eval()(torch.rand(1, 1, 32, 64)).shape[1] == backbones.get("timm:resnet10t").out_channels({})


@pytest.fixture(scope="module")
def family_data(three_class_set):
    return three_class_set


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "mobilenet_v3_large", "regnet_y_400mf", "tv_resnet18",
                                      "timm:resnet10t"])
def test_one_entry_per_family_trains_saves_and_predicts_the_same(tmp_path, family_data, backbone):
    out = tmp_path / "m"
    assert train_main.main(["--data_dir", str(family_data / "data"), "--model_dir", str(out), "--num_classes", "3",
                            "--backbone", backbone, "--summary_dir", str(tmp_path / "tb")] + SMALL) == 0
    loaded = load_model(str(out / "ANIMAL-SPOT.pk"))
    assert loaded.spec.backbone == backbone
    predictor = Predictor([PredictionModel.open(str(out / "ANIMAL-SPOT.pk"), memory_format="contiguous")], 0.2, 0.1,
                          prefetch=False)
    batches = list(predictor.stream(str(family_data / "rec.wav")))
    inputs = torch.cat([b.inputs for b in batches])
    with torch.no_grad():
        direct = torch.softmax(loaded.model(inputs), dim=1)
    assert float((torch.cat([b.probs for b in batches]) - direct).abs().max()) <= \
        error_bounds.network_tolerance(loaded.model, inputs)


def test_transfer_from_a_trained_model(tmp_path, family_data, capsys):
    first = tmp_path / "first"
    assert train_main.main(["--data_dir", str(family_data / "data"), "--model_dir", str(first), "--num_classes", "3",
                            "--backbone", "mobilenet_v3_small", "--summary_dir", str(tmp_path / "tb")] + SMALL) == 0
    source = load_model(str(first / "ANIMAL-SPOT.pk"))
    same = tmp_path / "same"
    argv = ["--data_dir", str(family_data / "data"), "--model_dir", str(same), "--num_classes", "3",
            "--transfer_from", str(first / "ANIMAL-SPOT.pk"), "--summary_dir", str(tmp_path / "tb"),
            "--log_dir", str(same)] + SMALL + ["--max_train_epochs", "0"]
    assert train_main.main(argv) == 0
    log = (same / "TRAIN.log").read_text()
    assert "encoder and classifier head loaded (same classes)" in log
    result = load_model(str(same / "ANIMAL-SPOT.pk"))
    assert result.spec.backbone == "mobilenet_v3_small"                       # the source's backbone
    for key, value in source.model.state_dict().items():                      # no epoch: the weights as given
        torch.testing.assert_close(result.model.state_dict()[key], value)
    other = tmp_path / "other_data"
    make_call_set(str(other), {"A1": 8, "A2": 8, "A3": 8, "noise": 8}, tapes_per_class=4, sr=16000, duration=0.25)
    new = tmp_path / "new"
    assert train_main.main(["--data_dir", str(other), "--model_dir", str(new), "--num_classes", "4",
                            "--transfer_from", str(first / "ANIMAL-SPOT.pk"), "--summary_dir", str(tmp_path / "tb"),
                            "--log_dir", str(new)] + SMALL) == 0
    assert "encoder loaded; a new classifier head for the classes A1, A2, A3, noise" in (new / "TRAIN.log").read_text()


def test_onnx_export_predicts_as_pytorch(tmp_path, family_data):
    out = tmp_path / "m"
    assert train_main.main(["--data_dir", str(family_data / "data"), "--model_dir", str(out), "--num_classes", "3",
                            "--summary_dir", str(tmp_path / "tb")] + SMALL) == 0
    onnx_path = str(tmp_path / "model.onnx")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "ANIMAL-SPOT", "export.py"), "--model_path",
                             str(out / "ANIMAL-SPOT.pk"), "--onnx", onnx_path], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import onnx
    meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert '"K1": 0' in meta["classes"] and '"n_fft": 256' in meta["data_opts"] and "temperature" in meta
    recording = str(family_data / "rec.wav")
    for path, name in ((str(out / "ANIMAL-SPOT.pk"), "torch"), (onnx_path, "onnx")):
        assert predict.main(["--model_path", path, "--input_file", recording, "--output_dir", str(tmp_path / name),
                             "--sequence_len", "0.2", "--hop", "0.1", "--threshold", "0.5", "--batch_size", "7",
                             "--num_workers", "0", "--no_progress", "--memory_format", "contiguous"]) == 0
    read = lambda name: [float(p) for p in re.findall(r"prob=(\S+)", (tmp_path / name / "rec_predict_output.log")
                                                      .read_text())]
    torch_probs, onnx_probs = read("torch"), read("onnx")
    assert len(torch_probs) == len(onnx_probs) == 29
    assert max(abs(a - b) for a, b in zip(torch_probs, onnx_probs)) <= 1e-4
