"""Prediction over recordings and evaluation into Raven tables."""

import os
import pickle
import re

import pytest
import torch

import main as train_main
import predict
from data.audiodataset import StridedAudioDataset
from data.transforms import FeatureOptions
from models.model_file import load_model
from utils.raven import evaluate, parse_log
from utils.synthetic import make_call_set, make_recording

SMALL = ["--sr", "16000", "--n_fft", "256", "--hop_length", "64", "--n_freq_bins", "32", "--fmin", "0",
         "--fmax", "8000", "--sequence_len", "300", "--num_workers", "0", "--batch_size", "4",
         "--epochs_per_eval", "1", "--lr", "1e-4", "--seed", "5", "--max_train_epochs", "1"]
RECORD = re.compile(r"\|I\|time=([\d.]+)-([\d.]+), pred=(\d), (?:pred_class=(\S+)-(\d+), )?prob=(\S+)$")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three models trained for one epoch: ResNet and ConvNeXt on 3 classes, a binary ResNet."""
    root = tmp_path_factory.mktemp("models")
    make_call_set(str(root / "multi"), {"K1": 14, "K2": 14, "noise": 14}, tapes_per_class=7, sr=16000, duration=0.3)
    make_call_set(str(root / "binary"), {"target": 14, "noise": 14}, tapes_per_class=7, sr=16000, duration=0.3)
    paths = {}
    for name, data, classes, extra in [("resnet", "multi", "3", ["--max_pool", "2"]),
                                       ("convnext", "multi", "3", ["--backbone", "convnext"]),
                                       ("binary", "binary", "2", ["--min_max_norm"])]:
        out = root / name
        assert train_main.main(["--data_dir", str(root / data), "--model_dir", str(out), "--num_classes", classes,
                                "--summary_dir", str(root / "tb")] + SMALL + extra) == 0
        paths[name] = str(out / "ANIMAL-SPOT.pk")
    recording = str(root / "rec.wav")
    make_recording(recording, 6.0, 22050, [("upsweep", 1.0), ("downsweep", 3.0), ("noise", 4.5)], seed=3)
    return paths, recording


def run_predict(tmp_path, model, recording, *extra):
    out = tmp_path / "out"
    argv = ["--model_path", model, "--input_file", recording, "--output_dir", str(out),
            "--sequence_len", "0.3", "--hop", "0.1", "--num_workers", "0"] + list(extra)
    assert predict.main(argv) == 0
    return (out / "rec_predict_output.log").read_text()


def records(text):
    return [m.groups() for m in (RECORD.search(line) for line in text.splitlines()) if m]


def reference_probabilities(model_path, recording, min_max=False):
    loaded = load_model(model_path)
    options = FeatureOptions.from_data_opts(loaded.data_opts, min_max)
    windows = StridedAudioDataset(recording, 4800, 1600, options=options)        # 0.3 s / 0.1 s at 16 kHz
    with torch.no_grad():
        return torch.cat([torch.softmax(loaded.model(windows[i].unsqueeze(0)), 1) for i in range(len(windows))])


@pytest.mark.parametrize("name", ["resnet", "convnext"])
def test_multi_class_models_predict_with_any_batch_size(tmp_path, models, name):
    paths, recording = models
    text8 = run_predict(tmp_path / "b8", paths[name], recording, "--batch_size", "8")
    text1 = run_predict(tmp_path / "b1", paths[name], recording, "--batch_size", "1")
    rows8, rows1 = records(text8), records(text1)
    expected = reference_probabilities(paths[name], recording)
    assert len(rows8) == len(rows1) == expected.shape[0] == 58          # ceil((96000 + 1 - 4800) / 1600)
    names = ["K1", "K2", "noise"]
    for i, (row8, row1) in enumerate(zip(rows8, rows1)):
        start, end, pred, cls_name, cls_idx, prob = row8
        assert (float(start), float(end)) == (round(i * 1600 / 16000, 3), round((i * 1600 + 4799) / 16000, 3))
        c = int(expected[i].argmax())
        assert (cls_name, int(cls_idx)) == (names[c], c)
        assert abs(float(prob) - float(expected[i, c])) < 1e-4
        assert pred == ("1" if float(prob) >= 0.5 else "0")
        assert abs(float(row1[5]) - float(prob)) < 1e-5
    block = text8.split("output_layer:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [r.split("=")[0] for r in block] == names
    assert abs(sum(float(r.split("=")[1].rstrip(";")) for r in block) - 1) < 1e-5


def test_binary_log_header_records_and_latent(tmp_path, models):
    paths, recording = models
    text = run_predict(tmp_path, paths["binary"], recording, "--batch_size", "5", "--latent_extract", "--threshold", "0.6")
    messages = [line.split("|", 2)[2] for line in text.splitlines()]
    assert messages[0] == recording
    assert messages[1] == f"Model Path: {paths['binary']}"
    assert messages[2].startswith("dataOpts: {'sr': 16000, 'preemphases': 0.98, 'n_fft': 256")
    assert messages[3] == ("prediction length: 0.3[s], hop length: 0.1[s], threshold: 0.6, "
                           "prediction fmin: 0[Hz] prediction fmax: 8000[Hz]")
    assert messages[4] == "class distribution: {'noise': 0, 'target': 1}"
    assert messages[5] == "Init min-max-normalization activated"           # read from the model file
    assert messages[6:9] == ["size of the file(samples)=96000", "size of hop(samples)=1600", "stop time=60"]
    rows = records(text)
    expected = reference_probabilities(paths["binary"], recording, min_max=True)
    assert len(rows) == 58
    for i, (start, end, pred, _, _, prob) in enumerate(rows):
        assert abs(float(prob) - float(expected[i, 1])) < 1e-4
        assert pred == ("1" if float(prob) >= 0.6 else "0")
    with open(tmp_path / "out" / "animal-spot-classifier.p", "rb") as handle:
        latent = pickle.load(handle)
    assert list(latent) == ["filenames", "features", "spectra_input"]
    assert len(latent["filenames"]) == 58 and latent["filenames"][0].endswith("rec_0.0_0.3.wav")
    assert len(latent["features"]) == 12 and latent["features"][0].shape == (5, 512)


def test_folder_input_and_bad_inputs(tmp_path, models):
    paths, recording = models
    folder = tmp_path / "recs"
    folder.mkdir()
    for name in ("a.x.wav", "a.y.wav"):
        os.symlink(recording, folder / name)
    (folder / "b.wav").write_bytes(b"RIFF-broken")
    assert predict.main(["--model_path", paths["resnet"], "--input_file", str(folder), "--output_dir",
                         str(tmp_path / "o"), "--num_workers", "1"]) == 1          # b.wav failed ...
    assert sorted(os.listdir(tmp_path / "o")) == ["a.x_predict_output.log", "a.y_predict_output.log"]  # ... the rest ran
    assert len(records((tmp_path / "o" / "a.y_predict_output.log").read_text())) == 5   # 2 s windows, 1 s hop, 6 s
    assert predict.main(["--model_path", str(tmp_path / "missing.pk"), "--input_file", recording]) == 1
    assert predict.main(["--model_path", paths["resnet"]]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main(["--model_path", paths["resnet"], "--input_file", str(empty)]) == 1


def test_prediction_log_turns_into_raven_rows(tmp_path, models):
    paths, recording = models
    run_predict(tmp_path, paths["resnet"], recording)
    written = evaluate(str(tmp_path / "out"), str(tmp_path / "raven"), 0.0, noise_in_anno=True)
    table = open(written[0]).read().splitlines()
    assert table[0].split("\t")[3:5] == ["Begin time (s)", "End time (s)"]
    assert float(table[1].split("\t")[3]) == 0.0 and float(table[-1].split("\t")[4]) == 6.0


LOG = """12:00:00|I|/data/rec.wav
12:00:00|I|Model Path: /m/ANIMAL-SPOT.pk
12:00:00|I|dataOpts: {'sr': 44100, 'preemphases': 0.98, 'n_fft': 1024, 'hop_length': 172, 'n_freq_bins': 256, 'fmin': 500, 'fmax': 10000, 'freq_compression': 'linear', 'min_level_db': -100, 'ref_level_db': 20}
12:00:00|I|prediction length: 0.3[s], hop length: 0.1[s], threshold: 0.5, prediction fmin: 500[Hz] prediction fmax: 10000[Hz]
12:00:00|I|class distribution: {'noise': 0, 'target': 1}
{records}"""


def write_log(path, probs, classes=None):
    lines = []
    for i, p in enumerate(probs):
        lines.append(f"12:00:01|I|time={round(i / 10, 3)}-{round(i / 10 + 0.3, 3)}, pred=0, prob={p}")
    text = LOG.replace("{records}", "\n".join(lines) + "\n")
    if classes:
        text = text.replace("{'noise': 0, 'target': 1}", str(classes))
    path.write_text(text)


def test_worked_binary_example_of_the_spec(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    write_log(log_dir / "rec_predict_output.log", [0.1, 0.9, 0.95, 0.2, 0.2, 0.8, 0.1, 0.1])
    with_noise = open(evaluate(str(log_dir), str(tmp_path / "a"), 0.85, noise_in_anno=True)[0]).read()
    assert with_noise.splitlines()[1:] == [
        "1\tSpectrogram_1\t1\t0.0\t0.1\t500\t10000\tnoise\t ",
        "2\tSpectrogram_1\t1\t0.1\t0.5\t500\t10000\ttarget\t ",
        "3\tSpectrogram_1\t1\t0.5\t1.0\t500\t10000\tnoise\t "]
    out = evaluate(str(log_dir / "rec_predict_output.log"), str(tmp_path / "b"), 0.85)[0]
    assert out.endswith("rec_predict_output.log.annotation.result.txt")
    assert open(out).read() == ("Selection\tView\tChannel\tBegin time (s)\tEnd time (s)\tLow Freq (Hz)\t"
                                "High Freq (Hz)\tSound type\tComments\n"
                                "1\tSpectrogram_1\t1\t0.1\t0.5\t500\t10000\ttarget\t \n")


def test_multi_class_segments_and_malformed_lines(tmp_path):
    classes = {"K1": 0, "K2": 1, "noise": 2}
    body = [
        "12:00:01|I|time=0.0-0.3, pred=1, pred_class=K1-0, prob=0.9",
        "output_layer:", "K1=0.9;", "K2=0.05;", "noise=0.05;", "",
        "12:00:01|I|time=0.1-0.4, pred=1, pred_class=K2-1, prob=0.95",
        "12:00:01|I|time=0.2-0.5, pred=1, pred_class=K2-1, prob=0.91",
        "12:00:01|I|time=0.3-0.6, pred=0, pred_class=K1-0, prob=0.4",
        "12:00:01|I|time=0.4-0.7, pred=1, pred_class=noise-2, prob=0.99",
        "12:00:01|I|time=0.8-1.1, pred=1, pred_class=K1-0, prob=0.99",
    ]
    path = tmp_path / "x_predict_output.log"
    path.write_text(LOG.replace("{records}", "\n".join(body) + "\n").replace("{'noise': 0, 'target': 1}", str(classes)))
    rows = open(evaluate(str(path), str(tmp_path / "o"), 0.85, noise_in_anno=True)[0]).read().splitlines()[1:]
    assert [r.split("\t")[3:5] + [r.split("\t")[7]] for r in rows] == [
        ["0.0", "0.3", "K1"], ["0.3", "0.5", "K2"], ["0.5", "0.8", "noise"], ["0.8", "1.1", "K1"]]
    bad = tmp_path / "bad_predict_output.log"
    bad.write_text(LOG.replace("{records}", "12:00:01|I|time=0.0-0.3, pred=1, prob=abc\n"))
    from utils.raven import LogFormatError
    with pytest.raises(LogFormatError, match=r"bad_predict_output.log:6"):
        parse_log(str(bad))


def test_jit_model_predicts_the_same_and_visualize_writes_pdfs(tmp_path, models):
    from models.model_file import save_jit_model
    paths, recording = models
    loaded = load_model(paths["resnet"])
    jit_path = str(tmp_path / "jit.pk")
    save_jit_model(jit_path, loaded.model, torch.rand(1, 1, 71, 32), loaded.encoder_opts, loaded.classifier_opts,
                   loaded.data_opts, loaded.classes, loaded.train_opts, {})
    plain = records(run_predict(tmp_path / "plain", paths["resnet"], recording, "--batch_size", "16"))
    jit = records(run_predict(tmp_path / "jit", jit_path, recording, "--jit_load", "--batch_size", "16",
                              "--visualize"))
    assert len(plain) == len(jit) == 58
    assert all(a[3] == b[3] and abs(float(a[5]) - float(b[5])) < 1e-4 for a, b in zip(plain, jit))
    pdfs = sorted(p for p in os.listdir(tmp_path / "jit" / "out") if p.endswith(".pdf"))
    assert len(pdfs) == 4 and pdfs[0].startswith("net_input_spec_0_") and pdfs[0].endswith("_rec.pdf")
    assert predict.main(["--model_path", jit_path, "--input_file", recording, "--output_dir", str(tmp_path / "l"),
                         "--jit_load", "--latent_extract"]) == 1          # no hidden layer in a traced model


def test_start_prediction_runs_predict_from_a_config(tmp_path, models):
    import subprocess
    import sys
    paths, recording = models
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = tmp_path / "config"
    cfg.write_text(f"src_dir=/*USER-SPECIFIC-DIRECTORY*/\nmodel_path={paths['binary']}\n"
                   f"output_dir={tmp_path / 'out'}\nsequence_len=0.30\nhop=0.10 # 0.1 s\nthreshold=0.75\n"
                   f"batch_size=4\nnum_workers=0\nno_cuda=true\nvisualize=false\ninput_file={recording}\n")
    result = subprocess.run([sys.executable, os.path.join(root, "PREDICTION", "start_prediction.py"), str(cfg)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Prediction Command:" in result.stderr
    assert len(records((tmp_path / "out" / "rec_predict_output.log").read_text())) == 58
