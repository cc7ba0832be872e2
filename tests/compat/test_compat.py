"""Files and calls made the other projects' way: the original's TorchScript files,
checkpoints and public names; the seed fork's ConvNeXt model files and checkpoints;
this project's own older checkpoints. Every file is built here from the spec."""

import os
import re
from collections import OrderedDict

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
import torchvision

import error_bounds
import main as train_main
import predict
from models.checkpoint_compat import adapt_checkpoint, legacy_order
from models.classifier import Classifier
from models.model_file import build_model, load_model
from models.residual_encoder import ResidualEncoder
from utils.synthetic import make_call_set
from conftest import small_run  # noqa: E402

DATA_OPTS = {"sr": 16000, "preemphases": 0.98, "n_fft": 256, "hop_length": 64, "n_freq_bins": 32, "fmin": 0,
             "fmax": 8000, "freq_compression": "linear", "min_level_db": -100, "ref_level_db": 20}
SMALL = small_run(200, 3, 0, "--no_progress")
CLASSES = {"K1": 0, "K2": 1, "noise": 2}


@pytest.fixture(scope="module")
def data(three_class_set):
    return three_class_set


# ------------------------------------------------------------------ original's order
def original_order(model: nn.Module):
    """Parameter names in the original's registration order (spec §5.2): in every
    residual block ``shortcut`` first, then conv1, bn1, conv2, bn2 (conv3, bn3)."""
    names = [n for n, _ in model.named_parameters()]
    out = []
    blocks = OrderedDict()
    for name in names:
        m = re.match(r"(encoder\.layer\d+\.\d+\.)", name)
        (blocks.setdefault(m.group(1), []) if m else out).append(name)
    head = [n for n in out if n.startswith("encoder.")]
    tail = [n for n in out if not n.startswith("encoder.")]
    body = []
    for prefix, members in blocks.items():
        body += [n for n in members if ".shortcut." in n] + [n for n in members if ".shortcut." not in n]
    return head + body + tail


def checkpoint_in_order(model: nn.Module, order, epoch=0):
    """A checkpoint as a project whose parameters register in ``order`` writes it."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam([params[n] for n in order], lr=1e-3, betas=(0.5, 0.999))
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.rand(2, 1, 50, 32)).sum().backward()
        optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    state = {"modelState": model.state_dict(),
             "trainState": {"epoch": epoch, "best_metric": 0.1, "best_model": model.state_dict(),
                            "optState": optimizer.state_dict(),
                            "earlyStopping": {"patience": 10, "mode": "max", "min_delta": 0, "_count": 0,
                                              "_best_score": 0.1, "is_improved": True},
                            "scheduler": scheduler.state_dict()},
             "classes": CLASSES}
    moments = {name: optimizer.state[params[name]]["exp_avg"].clone() for name in order
               if "exp_avg" in optimizer.state[params[name]]}     # unused parameters get no state
    return state, moments


def resnet(max_pool=0):
    torch.manual_seed(0)
    return build_model({"input_channels": 1, "conv_kernel_size": 7, "max_pool": max_pool, "resnet_size": 18},
                       {"input_channels": 512, "pooling": "avg", "num_classes": 3})


def test_parameter_order_is_the_originals():
    model = resnet()
    assert [n for n, _ in model.named_parameters()] == original_order(model)
    names = [n for n, _ in model.named_parameters()]
    assert names.index("encoder.layer2.0.shortcut.0.weight") < names.index("encoder.layer2.0.conv1.weight")


@pytest.mark.parametrize("layout", ["original", "legacy"])
def test_checkpoint_optimizer_state_maps_by_name(layout):
    model = resnet()
    names = original_order(model)
    order = names if layout == "original" else legacy_order(names)
    assert (order == names) == (layout == "original")
    state, moments = checkpoint_in_order(model, order)
    fresh = resnet()
    optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    optimizer.load_state_dict(adapt_checkpoint(state, fresh)["trainState"]["optState"])
    for name, param in fresh.named_parameters():
        torch.testing.assert_close(optimizer.state_dict()["state"][list(dict(fresh.named_parameters())).index(name)]
                                   ["exp_avg"], moments[name], rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["original", "legacy"])
def test_original_and_older_checkpoints_resume(tmp_path, data, layout):
    model = resnet()
    order = original_order(model) if layout == "original" else legacy_order(original_order(model))
    state, _ = checkpoint_in_order(model, order)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save(state, ckpt / "multi_class_3_classifier_epoch_00000.checkpoint")     # no formatVersion
    status = train_main.main(["--data_dir", str(data / "data"), "--model_dir", str(tmp_path / "m"),
                              "--checkpoint_dir", str(ckpt), "--log_dir", str(tmp_path / "log"), "--num_classes", "3",
                              "--max_pool", "0", "--max_train_epochs", "2", "--summary_dir", str(tmp_path / "tb")]
                             + SMALL)
    assert status == 0
    log = (tmp_path / "log" / "TRAIN.log").read_text()
    assert "Resuming with epoch 1" in log and "|train|1|" in log and "|train|0|" not in log


# ------------------------------------------------------------------- the seed fork
class SeedConvNextEncoder(nn.Module):
    """The seed fork's encoder (spec §13.4): the whole convnext_tiny as ``backbone``, its
    ``features`` aliased, a new one-channel stem, no final LayerNorm in the forward pass."""

    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.convnext_tiny()
        old = self.backbone.features[0][0]
        stem = nn.Conv2d(1, 96, kernel_size=4, stride=4)
        with torch.no_grad():
            stem.weight.copy_(old.weight.mean(dim=1, keepdim=True))
        self.backbone.features[0][0] = stem
        self.features = self.backbone.features

    def forward(self, x):
        return self.features(x)


def seed_model():
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict(encoder=SeedConvNextEncoder(), classifier=Classifier(
        {"input_channels": 768, "pooling": "avg", "num_classes": 3})))


def test_seed_convnext_model_file_predicts_what_the_seed_computes(tmp_path):
    seed = seed_model().eval()
    path = tmp_path / "seed.pk"
    torch.save({"encoderOpts": {"input_channels": 1, "pretrained": True},
                "classifierOpts": {"input_channels": 768, "pooling": "avg", "num_classes": 3},
                "dataOpts": DATA_OPTS, "encoderState": seed.encoder.state_dict(),
                "classifierState": seed.classifier.state_dict(), "classes": CLASSES}, path)
    keys = set(torch.load(path, weights_only=True)["encoderState"])
    assert any(k.startswith("backbone.features.") for k in keys) and any(k.startswith("backbone.classifier.")
                                                                         for k in keys)
    loaded = load_model(str(path))
    assert loaded.spec.encoder_opts["final_norm"] is False and loaded.spec.backbone == "convnext"
    x = torch.rand(3, 1, 50, 32)
    with torch.no_grad():
        expected = torch.softmax(seed(x), dim=1)
        ours = torch.softmax(loaded.model(x), dim=1)
    assert float((ours - expected).abs().max()) <= error_bounds.network_tolerance(seed, x)


def test_seed_convnext_checkpoint_resumes(tmp_path, data):
    seed = seed_model()
    order = [n for n, _ in seed.named_parameters()]                 # backbone.features, backbone.classifier, ...
    assert any(n.startswith("encoder.backbone.classifier.") for n in order)
    state, moments = checkpoint_in_order(seed, order)
    ours = build_model({"backbone": "convnext", "input_channels": 1, "variant": "tiny", "final_norm": False},
                       {"input_channels": 768, "pooling": "avg", "num_classes": 3})
    adapted = adapt_checkpoint(state, ours)
    ours.load_state_dict(adapted["modelState"])
    optimizer = torch.optim.Adam(ours.parameters(), lr=1e-3)
    optimizer.load_state_dict(adapted["trainState"]["optState"])
    index = {n: i for i, (n, _) in enumerate(ours.named_parameters())}
    for name in ("encoder.features.0.0.weight", "encoder.features.7.2.block.5.weight", "classifier.linear.weight"):
        seed_name = name.replace("encoder.features", "encoder.backbone.features")
        torch.testing.assert_close(optimizer.state_dict()["state"][index[name]]["exp_avg"], moments[seed_name],
                                   rtol=0, atol=0)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save(state, ckpt / "multi_class_3_classifier_epoch_00000.checkpoint")
    status = train_main.main(["--data_dir", str(data / "data"), "--model_dir", str(tmp_path / "m"),
                              "--checkpoint_dir", str(ckpt), "--log_dir", str(tmp_path / "log"), "--num_classes", "3",
                              "--backbone", "convnext", "--max_train_epochs", "2",
                              "--summary_dir", str(tmp_path / "tb")] + SMALL)
    assert status == 0
    log = (tmp_path / "log" / "TRAIN.log").read_text()
    assert "seed fork's ConvNeXt" in log and "Resuming with epoch 1" in log
    assert load_model(str(tmp_path / "m" / "ANIMAL-SPOT.pk")).spec.encoder_opts["final_norm"] is False


# ----------------------------------------------------------------- TorchScript files
def original_jit_file(path, model):
    """A TorchScript file as the original's --jit_save writes it: a (1, 1, 128, 256)
    trace with ``str()`` of Python dicts as extra files."""
    transforms = {"load_audio": "{sr: 16000, mono : True}", "pre_emph": "{pre_empf_factor : 0.98}",
                  "spectrogram": "{fft : 256, hop : 64, center : False}",
                  "freq_compression": "{type : linear, bins : 32, fmin : 0, fmax : 8000}",
                  "amplitude_to_decibel": "{min_db : -100}",
                  "normalize": "{min_max : False, min_db : -100, ref_db : 20}",
                  "class_info": "{num_class : 3, name_class : " + str(CLASSES) + "}", "seg_size": "{size_ms : 200}"}
    extra = {"dataOpts": str(DATA_OPTS), "classes": str(CLASSES),
             "encoderOpts": str({"input_channels": 1, "conv_kernel_size": 7, "max_pool": 0, "resnet_size": 18}),
             "classifierOpts": str({"input_channels": 512, "pooling": "avg", "num_classes": 3}),
             "encoderState": str(model.encoder.state_dict())[:200], "classifierState": "tensor([[0.1, ...]])",
             "transforms": str(transforms)}
    traced = torch.jit.trace(model.eval(), torch.rand(1, 1, 128, 256))
    torch.jit.save(traced, str(path), _extra_files=extra)


def test_original_torchscript_file_predicts(tmp_path, data):
    model = resnet().eval()
    with torch.no_grad():               # non-trivial BatchNorm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 1.5)
    original_jit_file(tmp_path / "orig.pk", model)
    loaded = load_model(str(tmp_path / "orig.pk"), jit=True)
    assert loaded.data_opts == DATA_OPTS and loaded.classes == CLASSES
    out = tmp_path / "out"
    assert predict.main(["--model_path", str(tmp_path / "orig.pk"), "--jit_load", "--input_file",
                         str(data / "rec.wav"), "--output_dir", str(out), "--sequence_len", "0.3", "--hop", "0.3",
                         "--num_workers", "0", "--no_progress", "--memory_format", "contiguous"]) == 0
    text = (out / "rec_predict_output.log").read_text()
    probs = [float(m) for m in re.findall(r"pred_class=\S+, prob=(\S+)", text)]
    assert len(probs) == 10                                             # ceil((48000 + 1 - 4800) / 4800)
    from prediction.core import Predictor, PredictionModel
    plain = str(tmp_path / "plain.pk")
    torch.save({"encoderOpts": {"input_channels": 1, "conv_kernel_size": 7, "max_pool": 0, "resnet_size": 18},
                "classifierOpts": {"input_channels": 512, "pooling": "avg", "num_classes": 3}, "dataOpts": DATA_OPTS,
                "encoderState": model.encoder.state_dict(), "classifierState": model.classifier.state_dict(),
                "classes": CLASSES}, plain)
    predictor = Predictor([PredictionModel.open(plain, memory_format="contiguous")], 0.3, 0.3, prefetch=False)
    batches = list(predictor.stream(str(data / "rec.wav")))
    expected = torch.cat([b.probs for b in batches]).max(dim=1).values
    tolerance = error_bounds.network_tolerance(model, torch.cat([b.inputs for b in batches]))
    assert max(abs(a - float(b)) for a, b in zip(probs, expected)) <= tolerance


# ----------------------------------------------------------------- public names (§14)
def test_original_transform_objects_compute_the_spec(tmp_path):
    from data.transforms import (Amp2Db, Compose, F2M, Interpolate, M2MFCC, MinMaxNormalize, Normalize,
                                 PaddedSubsequenceSampler, PreEmphasize, Spectrogram, load_audio)
    rng = np.random.default_rng(4)
    signal = (0.4 * np.sin(2 * np.pi * 2500 * np.arange(8000) / 16000) + 0.05 * rng.standard_normal(8000))
    path = str(tmp_path / "x.wav")
    sf.write(path, signal.astype(np.float32), 16000, subtype="FLOAT")
    x = signal.astype(np.float32).astype(np.float64)
    frames = error_bounds.window_frames(x, [0], len(x), 256, 64)
    sigma = error_bounds.pre_emphasis_sigma(np.abs(x).max(), 0.0)
    for compression, squeeze in (("linear", Interpolate(32, 16000, 0, 8000)), ("mel", F2M(16000, 32, 0, 8000))):
        chain = Compose(PreEmphasize(0.98), Spectrogram(256, 64, center=False), squeeze, Amp2Db(-100),
                        Normalize(-100, 20))
        ours = chain(load_audio(path, 16000))[0].numpy()
        bounds = error_bounds.input_interval(frames, sigma, 16000, 256, compression, 32, 0, 8000)
        error_bounds.assert_within(ours, bounds)
        mm = Compose(PreEmphasize(0.98), Spectrogram(256, 64, center=False), squeeze, Amp2Db(-100),
                     MinMaxNormalize())(load_audio(path, 16000))[0].numpy()
        bounds = error_bounds.input_interval(frames, sigma, 16000, 256, compression, 32, 0, 8000, min_max=True)
        error_bounds.assert_within(mm, bounds, max_median_width=3e-2)
    with pytest.raises(ValueError, match="2-D"):
        PreEmphasize()(torch.zeros(5))
    mel = np.abs(rng.standard_normal((7, 40))) + 1e-3
    from scipy.fftpack import dct
    expected = dct(10 * np.log10(mel), axis=-1)[:, 1:33]
    ours = M2MFCC(32)(torch.tensor(mel, dtype=torch.float32)).numpy()
    bound = (42 * error_bounds.U) * 2 * np.abs(10 * np.log10(mel)).sum(axis=-1, keepdims=True) + 1e-4
    assert np.all(np.abs(ours - expected) <= bound)
    seq = torch.arange(6, dtype=torch.float32).view(6, 1)
    assert PaddedSubsequenceSampler(10, dim=0, random=False)(seq)[:, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 0, 0]
    assert PaddedSubsequenceSampler(3, dim=0, random=False)(seq)[:, 0].tolist() == [1, 2, 3]


def test_original_dataset_names_and_split_pattern(tmp_path):
    from data.audiodataset import (AudioDataset, CsvSplit, DatabaseCsvSplit, Dataset, DefaultSpecDatasetOps,
                                   FileNameDataset, StridedAudioDataset, get_audio_files_from_dir, get_tape_key)
    d = str(tmp_path)
    make_call_set(d, {"K1": 12, "noise": 12}, tapes_per_class=6, sr=8000, duration=0.2)
    files = list(get_audio_files_from_dir(d))
    assert len(files) == 24 and all(f.endswith(".wav") for f in files)
    train = DatabaseCsvSplit({"train": .7, "val": .15, "test": .15}, working_dir=d, split_per_dir=True).load(
        "train", files)
    assert train and all(os.path.isfile(os.path.join(d, p)) for p in ("train", "val", "test"))
    parts = {p: DatabaseCsvSplit({"train": .7, "val": .15, "test": .15}, working_dir=d).load(p)
             for p in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(files) and parts["train"] == train
    assert not {get_tape_key(f) for f in parts["train"]} & {get_tape_key(f) for f in parts["test"]}
    assert get_tape_key("K1-x_1_2019_t7_1_2.wav") == "2019_T7" and get_tape_key("K1-x_1_1900_T_1_2.wav") is None
    with pytest.raises(ValueError, match="sum to 1"):
        CsvSplit({"train": .7, "val": .2, "test": .2})
    assert DefaultSpecDatasetOps == {"sr": 44100, "preemphases": 0.98, "n_fft": 4096, "hop_length": 441,
                                     "n_freq_bins": 256, "fmin": 500, "fmax": 10000, "freq_compression": "linear",
                                     "min_level_db": -100, "ref_level_db": 20}
    assert FileNameDataset(files, d, transform=len)[0] == len(os.path.join(d, files[0]))
    assert AudioDataset(files, d, sr=8000)[0].shape == (1, 1600)
    dataset = Dataset(files, d, None, ["K1", "noise"], sr=8000, n_fft=256, hop_length=64, n_freq_bins=16,
                      f_min=0, f_max=4000, seq_len=20)
    item, label = dataset[3]
    assert item.shape == (1, 20, 16) and label["call"] == (0 if files[3].startswith("K1") else 1)
    windows = StridedAudioDataset(os.path.join(d, files[0]), 800, 400, sr=8000, fft_size=256, fft_hop=64,
                                  n_freq_bins=16, f_min=0, f_max=4000)
    assert len(windows) == 3 and windows[0].shape == (1, 1 + (800 - 256) // 64, 16)


def test_original_model_names():
    encoder = ResidualEncoder({"input_channels": 1, "conv_kernel_size": 5, "max_pool": 1, "resnet_size": 18})
    assert encoder.model_opts()["conv_kernel_size"] == 5
    classifier = Classifier({"input_channels": 512, "pooling": "avg", "num_classes": 4})
    logits = classifier(encoder(torch.rand(2, 1, 64, 64)))
    outputs = classifier.get_layer_output()
    assert classifier.model_opts()["num_classes"] == 4
    assert outputs["hidden_layer_1"].shape == (2, 512) and torch.equal(outputs["output_layer"], logits)


# ---------------------------------------------------------------- smaller divergences
def test_a_noise_dir_placeholder_warns_and_trains(tmp_path, data):
    argv = ["--data_dir", str(data / "data"), "--model_dir", str(tmp_path / "m"), "--num_classes", "3",
            "--log_dir", str(tmp_path / "log"), "--augmentation", "--noise_dir", "/*USER-SPECIFIC-DIRECTORY*/",
            "--max_train_epochs", "1", "--summary_dir", str(tmp_path / "tb")] + SMALL
    assert train_main.main(argv) == 0
    assert "--noise_dir /*USER-SPECIFIC-DIRECTORY*/ is not a folder" in (tmp_path / "log" / "TRAIN.log").read_text()


@pytest.mark.parametrize("module", ["main", "predict"])
def test_every_flag_has_help(module):
    parser = __import__(module).build_parser()
    missing = [a.option_strings for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert missing == []
    text = parser.format_help()
    for flag in ("--max_train_epochs", "--freq_compression", "--sr", "--num_classes", "--hop_length"):
        if module == "main":
            assert flag in text
