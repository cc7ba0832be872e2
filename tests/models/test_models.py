import urllib.error

import pytest
import torch
import torchvision

from models import backbones
from models.convnext_encoder import ConvNextEncoder, PretrainedWeightsError
from models.model_file import build_model, load_model
from models.residual_encoder import ResidualEncoder


def test_resnet18_parameter_names_are_the_originals():
    keys = set(ResidualEncoder({"resnet_size": 18}).state_dict())
    for key in ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.weight",
                "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_var", "layer4.1.conv2.weight"]:
        assert key in keys
    assert not any(k.startswith("layer1.0.shortcut") for k in keys)       # identity with max_pool 1
    assert any(k.startswith("layer1.0.shortcut") for k in ResidualEncoder({"max_pool": 0}).state_dict())
    assert "layer3.0.conv3.weight" in ResidualEncoder({"resnet_size": 50}).state_dict()


@pytest.mark.parametrize("max_pool, shape", [(0, (4, 8)), (1, (4, 8)), (2, (8, 16))])
def test_resnet_output_shapes(max_pool, shape):
    out = ResidualEncoder({"max_pool": max_pool}).eval()(torch.zeros(1, 1, 128, 256))
    assert out.shape == (1, 512) + shape


def test_bad_resnet_options_fail_clearly():
    with pytest.raises(ValueError, match="max_pool"):
        ResidualEncoder({"max_pool": 3})
    with pytest.raises(ValueError, match="resnet size"):
        ResidualEncoder({"resnet_size": 20})


def test_convnext_output_and_registry():
    encoder = backbones.build_encoder({"backbone": "convnext"})
    assert isinstance(encoder, ConvNextEncoder)
    assert encoder.eval()(torch.zeros(2, 1, 64, 96)).shape == (2, 768, 2, 3)
    assert backbones.output_channels({"backbone": "convnext"}) == 768
    assert backbones.output_channels({"resnet_size": 50}) == 2048          # original files: resnet
    assert backbones.output_channels({"backbone": "convnext_base"}) == 1024


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory):
    """A torchvision convnext_tiny state dict on disk, standing in for ImageNet weights."""
    torch.manual_seed(0)
    net = torchvision.models.convnext_tiny()
    with torch.no_grad():
        net.classifier[0].weight.uniform_(0.5, 1.5)
        net.classifier[0].bias.uniform_(-0.5, 0.5)
        net.features[0][0].bias.uniform_(-0.5, 0.5)
    path = tmp_path_factory.mktemp("weights") / "convnext_tiny.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_convnext_stem_from_weights_file(imagenet_like_weights):
    path, state = imagenet_like_weights
    encoder = ConvNextEncoder(input_channels=1, weights_path=str(path))
    stem = encoder.features[0][0]
    assert stem.in_channels == 1
    torch.testing.assert_close(stem.weight, state["features.0.0.weight"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(stem.bias, state["features.0.0.bias"])           # bias kept, not re-initialised
    torch.testing.assert_close(encoder.norm.weight, state["classifier.0.weight"])  # final LayerNorm kept
    torch.testing.assert_close(encoder.norm.bias, state["classifier.0.bias"])
    torch.testing.assert_close(encoder.features[3][0].block[0].weight, state["features.3.0.block.0.weight"])


def test_pretrained_offline_error_names_both_ways(monkeypatch, tmp_path):
    import torchvision.models._api as weights_api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))                  # an empty cache
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as error:
        ConvNextEncoder(pretrained=True)
    assert "--pretrained_weights" in str(error.value) and "cache" in str(error.value)
    assert str(tmp_path) in str(error.value)                           # where to put the file


def test_bad_weights_file_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(1)}, path)
    with pytest.raises(PretrainedWeightsError, match="other.pth"):
        ConvNextEncoder(weights_path=str(path))


def test_original_model_file_loads_and_predicts_the_same(tmp_path):
    """A file as the original writes it: no backbone name, plain dicts and tensors."""
    torch.manual_seed(1)
    enc_opts = {"input_channels": 1, "conv_kernel_size": 7, "max_pool": 2, "resnet_size": 18}
    cls_opts = {"input_channels": 512, "pooling": "avg", "num_classes": 2}
    model = build_model(enc_opts, cls_opts).eval()
    with torch.no_grad():   # non-trivial BatchNorm statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    data_opts = {"sr": 44100, "preemphases": 0.98, "n_fft": 4096, "hop_length": 441, "n_freq_bins": 256,
                 "fmin": 500, "fmax": 10000, "freq_compression": "linear", "min_level_db": -100, "ref_level_db": 20}
    path = tmp_path / "ANIMAL-SPOT.pk"
    torch.save({"encoderOpts": enc_opts, "classifierOpts": cls_opts, "dataOpts": data_opts,
                "encoderState": model.encoder.state_dict(), "classifierState": model.classifier.state_dict(),
                "classes": {"noise": 0, "target": 1}}, path)
    assert set(torch.load(path, weights_only=True)) >= {"encoderOpts", "encoderState"}
    loaded = load_model(str(path))
    x = torch.rand(3, 1, 119, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.classes == {"noise": 0, "target": 1} and loaded.data_opts == data_opts


def test_resnet_model_file_keeps_the_original_keys(tmp_path):
    from data.features import FeatureOptions
    from models.model_file import FORMAT_VERSION, ModelSpec, save_model
    enc = {"input_channels": 1, "conv_kernel_size": 5, "max_pool": 0, "resnet_size": 34, "backbone": "resnet"}
    cls = {"input_channels": 512, "pooling": "avg", "num_classes": 3}
    model = build_model(enc, cls)
    path = tmp_path / "ANIMAL-SPOT.pk"
    spec = ModelSpec(enc, cls, FeatureOptions().data_opts(), {"a": 0, "b": 1, "c": 2}, {"min_max_norm": True},
                     {"a": 0.7, "b": 0.4}, 1.5, {"version": "x"})
    save_model(str(path), model, spec)
    state = torch.load(path, weights_only=True)
    assert list(state)[:6] == ["encoderOpts", "classifierOpts", "dataOpts", "encoderState", "classifierState", "classes"]
    assert state["formatVersion"] == FORMAT_VERSION and state["thresholds"] == {"a": 0.7, "b": 0.4}
    loaded = load_model(str(path))
    assert loaded.spec.temperature == 1.5 and loaded.spec.min_max_norm and loaded.spec.provenance == {"version": "x"}
    assert list(state["encoderOpts"])[:4] == ["input_channels", "conv_kernel_size", "max_pool", "resnet_size"]
    assert list(state["dataOpts"]) == ["sr", "preemphases", "n_fft", "hop_length", "n_freq_bins", "fmin", "fmax",
                                       "freq_compression", "min_level_db", "ref_level_db"]
    original = ResidualEncoder({"input_channels": 1, "conv_kernel_size": 5, "max_pool": 0, "resnet_size": 34})
    assert set(state["encoderState"]) == set(original.state_dict())
    assert set(state["classifierState"]) == {"linear.weight", "linear.bias"}
    result = original.load_state_dict(state["encoderState"])
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in original.state_dict().items():
        assert torch.equal(value, state["encoderState"][key]), key


def test_pretrained_comes_from_torchvisions_cache_offline(monkeypatch, tmp_path, imagenet_like_weights):
    import shutil
    import torchvision.models._api as weights_api
    path, state = imagenet_like_weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    shutil.copy(path, cached)
    real = weights_api.load_state_dict_from_url

    def cache_only(*args, **kwargs):   # any download attempt fails; the cached file is used
        import torch.hub
        monkeypatch.setattr(torch.hub, "download_url_to_file",
                            lambda *a, **k: (_ for _ in ()).throw(AssertionError("download attempted")))
        return real(*args, **kwargs)
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", cache_only)
    encoder = ConvNextEncoder(pretrained=True)
    torch.testing.assert_close(encoder.features[0][0].bias, state["features.0.0.bias"])
