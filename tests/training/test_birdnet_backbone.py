"""``main.py --backbone birdnet``: BirdNET trained by the ANIMAL-SPOT trainer on raw audio, its
model file a normal one (predict.py, --describe with its licence), the backbone frozen or at
its own learning rate, --spec_augment on its front end's image, a head from embed.py fit as
the start, and spectrogram-only flags refused with their reason."""

import json

import pytest
import torch

import embed
import export
import main as train_main
import predict
from conftest import small_run
from evaluation.log_format import parse_log
from models import birdnet
from models.model_file import load_model
from utils.synthetic import make_call_set, make_recording


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("birdnet_training")
    make_call_set(str(root / "data"), {"K1": 4, "K2": 4, "noise": 4}, tapes_per_class=3, sr=16000, duration=0.5,
                  seed=4)
    make_recording(str(root / "rec" / "rec.wav"), 6.0, 22050, [("upsweep", 1.0), ("downsweep", 4.0)], seed=5)
    return root


def argv(clips, out, *extra):
    return ["--backbone", "birdnet", "--data_dir", str(clips / "data"), "--model_dir", str(out / "m"), "--log_dir",
            str(out / "l"), "--num_classes", "3", "--max_train_epochs", "1", "--audio_window", "1.5",
            "--no_progress"] + small_run(200, 1, 0) + list(extra)


def test_birdnet_trains_frozen_and_its_model_file_predicts(clips, tmp_path, capsys):
    assert train_main.main(argv(clips, tmp_path, "--freeze_backbone", "--spec_augment")) == 0
    loaded = load_model(str(tmp_path / "m" / "ANIMAL-SPOT.pk"))
    assert loaded.spec.data_opts["input"] == "audio" and loaded.spec.data_opts["window"] == 1.5
    assert loaded.spec.train_opts["spec_augment"] is True              # masks on the front end's image, in training
    published, _ = birdnet.weights()
    trained = loaded.model.encoder.network.state_dict()
    assert all(torch.equal(trained[k], published[k]) for k in trained)           # frozen: BirdNET's own weights
    assert "classifier.weight" not in trained                                     # its species layer left out
    assert predict.main(["--model_path", str(tmp_path / "m" / "ANIMAL-SPOT.pk"), "--input_file",
                         str(clips / "rec"), "--output_dir", str(tmp_path / "p"), "--hop", "1", "--no_progress"]) == 0
    assert (tmp_path / "p" / "rec_predict_output.log").read_text().count("pred=") == 6
    assert export.main(["--model_path", str(tmp_path / "m" / "ANIMAL-SPOT.pk"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert predict.main(["--model_path", str(tmp_path / "m.onnx"), "--input_file", str(clips / "rec"), "--output_dir",
                         str(tmp_path / "onnx"), "--hop", "1", "--no_progress"]) == 0
    ours, theirs = (parse_log(str(tmp_path / folder / "rec_predict_output.log")) for folder in ("p", "onnx"))
    worst = max(abs(p - q) for a, b in zip(ours.windows.values(), theirs.windows.values()) for p, q in
                zip(a.probs, b.probs))
    assert len(ours.windows) == len(theirs.windows) == 6 and worst <= 1e-5       # float32 sums in another order
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    for seconds in (1.25, 2.5):                         # its time axis is dynamic: other lengths than the export's
        audio = torch.randn(2, int(48000 * seconds)) * 0.1
        with torch.no_grad():
            expected = torch.softmax(loaded.model.eval()(audio.unsqueeze(1)), dim=1).numpy()
        assert abs(session.run(None, {"input": audio.numpy()})[0] - expected).max() <= 1e-5
    capsys.readouterr()
    assert predict.main(["--describe", str(tmp_path / "m" / "ANIMAL-SPOT.pk")]) == 0
    card = capsys.readouterr().out
    assert "Trained from BirdNET GLOBAL 6K V2.4" in card and "CC BY-NC-SA 4.0" in card


def test_a_head_from_embed_fit_starts_a_fine_tuning_run_and_spectrogram_flags_are_refused(clips, tmp_path, capsys):
    assert embed.main(["--backbone", "birdnet", "--input_file", str(clips / "data"), "--store", str(tmp_path / "s"),
                       "--hop", "3"]) == 0
    assert embed.main(["fit", "--store", str(tmp_path / "s"), "--labels", str(clips / "data"), "--out",
                       str(tmp_path / "head.pk"), "--epochs", "30"]) == 0
    capsys.readouterr()
    assert train_main.main(argv(clips, tmp_path, "--transfer_from", str(tmp_path / "head.pk"),
                                "--freeze_backbone", "--jit_save")) == 0
    assert "a head fitted on birdnet's embedding" in (tmp_path / "l" / "TRAIN.log").read_text()
    extra = {"dataOpts": "", "classes": "", "transforms": ""}                  # a TorchScript file of raw audio in
    scripted = torch.jit.load(str(tmp_path / "m" / "ANIMAL-SPOT.pk"), _extra_files=extra)
    data_opts = json.loads(extra["dataOpts"])
    assert (data_opts["input"], data_opts["sr"], data_opts["window"]) == ("audio", 48000, 1.5)
    assert json.loads(extra["classes"]) == {"K1": 0, "K2": 1, "noise": 2} and "samples : 72000" in extra["transforms"].decode()
    assert scripted(torch.zeros(2, 1, 72000)).shape == (2, 3)
    assert predict.main(["--model_path", str(tmp_path / "m" / "ANIMAL-SPOT.pk"), "--jit_load", "--input_file",
                         str(clips / "rec"), "--output_dir", str(tmp_path / "jit"), "--hop", "1", "--no_progress"]) == 0
    assert (tmp_path / "jit" / "rec_predict_output.log").read_text().count("pred=") == 6
    for flag, reason in ((["--background_dir", str(clips / "rec")], "takes raw audio, so these act on nothing"),
                         (["--min_max_norm"], "takes raw audio, so these act on nothing"),
                         (["--audio_window", "0.5"], "too short for its network")):
        assert train_main.main(argv(clips, tmp_path / "refused", *flag)) == 1
        assert reason in capsys.readouterr().err
