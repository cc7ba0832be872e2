"""Prediction over recordings: the core's stream, the original's log, Raven tables,
season-scale runs, ensembles, detector + classifier, per-class thresholds."""

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import error_bounds
import main as train_main
import predict
from models.model_file import load_model
from prediction.core import Predictor, PredictionModel
from evaluation.log_format import LogFormatError, parse_log
from prediction.decisions import DecisionRule, evaluate
from utils.synthetic import make_call_set, make_recording
from conftest import small_run  # noqa: E402

SMALL = small_run(300, 5, 0, "--max_train_epochs", "1", "--no_progress")
RECORD = re.compile(r"\|I\|time=([\d.]+)-([\d.]+), pred=(\d), (?:pred_class=(\S+)-(\d+), )?prob=(\S+)$")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Models trained for one epoch: ResNet and ConvNeXt on 3 classes, a binary ResNet,
    a second ResNet seed (ensembles) and a binary detector at another sample rate."""
    root = tmp_path_factory.mktemp("models")
    make_call_set(str(root / "multi"), {"K1": 14, "K2": 14, "noise": 14}, tapes_per_class=7, sr=16000, duration=0.3)
    make_call_set(str(root / "binary"), {"target": 14, "noise": 14}, tapes_per_class=7, sr=16000, duration=0.3)
    paths = {}
    for name, data, classes, extra in [("resnet", "multi", "3", ["--max_pool", "2"]),
                                       ("convnext", "multi", "3", ["--backbone", "convnext"]),
                                       ("binary", "binary", "2", ["--min_max_norm"]),
                                       ("resnet_b", "multi", "3", ["--max_pool", "2", "--seed", "9"]),
                                       ("detector", "binary", "2", ["--sr", "8000", "--fmax", "4000"])]:
        out = root / name
        assert train_main.main(["--data_dir", str(root / data), "--model_dir", str(out), "--num_classes", classes,
                                "--summary_dir", str(root / "tb")] + SMALL + extra) == 0
        paths[name] = str(out / "ANIMAL-SPOT.pk")
    recording = str(root / "rec.wav")
    make_recording(recording, 6.0, 22050, [("upsweep", 1.0), ("downsweep", 3.0), ("noise", 4.5)], seed=3)
    return paths, recording


def run_predict(tmp_path, model, recording, *extra, status=0):
    out = tmp_path / "out"
    argv = ["--model_path"] + model.split(" ") + ["--input_file", recording, "--output_dir", str(out),
                                                  "--sequence_len", "0.3", "--hop", "0.1", "--num_workers", "0",
                                                  "--memory_format", "contiguous", "--no_progress"] + list(extra)
    assert predict.main(argv) == status
    return (out / "rec_predict_output.log").read_text() if status == 0 else None


def records(text):
    return [m.groups() for m in (RECORD.search(line) for line in text.splitlines()) if m]


def stream(paths, recording, batch_size=16, **kwargs):
    predictor = Predictor([PredictionModel.open(p, memory_format="contiguous") for p in paths], 0.3, 0.1,
                          batch_size, prefetch=False, **kwargs)
    return list(predictor.stream(recording))


@pytest.mark.parametrize("name", ["resnet", "convnext"])
def test_stream_equals_the_log_for_any_batch_size(tmp_path, models, name):
    paths, recording = models
    batches = stream([paths[name]], recording, batch_size=8)
    probs = torch.cat([b.probs for b in batches])
    rows = records(run_predict(tmp_path / "b8", paths[name], recording, "--batch_size", "8", "--threshold", "0.5"))
    assert len(rows) == probs.shape[0] == 58                          # ceil((96000 + 1 - 4800) / 1600)
    names = ["K1", "K2", "noise"]
    for i, (start, end, pred, cls_name, cls_idx, prob) in enumerate(rows):
        assert (float(start), float(end)) == (round(i * 1600 / 16000, 3), round((i * 1600 + 4799) / 16000, 3))
        c = int(probs[i].argmax())
        assert (cls_name, int(cls_idx)) == (names[c], c)
        assert prob == repr(float(probs[i, c]))                        # the same numbers, printed as the original
        assert pred == ("1" if float(prob) >= 0.5 else "0")
    # batch size changes only float32 rounding: within this model's measured rounding
    inputs = torch.cat([b.inputs for b in batches])
    model = load_model(paths[name]).model
    tolerance = error_bounds.network_tolerance(model, inputs)
    rows1 = records(run_predict(tmp_path / "b1", paths[name], recording, "--batch_size", "1"))
    assert max(abs(float(a[5]) - float(b[5])) for a, b in zip(rows, rows1)) <= tolerance
    with torch.no_grad():
        direct = torch.softmax(model(inputs), dim=1)
    assert float((direct - probs).abs().max()) <= tolerance
    text = run_predict(tmp_path / "b8_calibrated", paths[name], recording, "--batch_size", "8")
    block = text.split("output_layer:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [r.split("=")[0] for r in block] == names
    assert abs(sum(float(r.split("=")[1].rstrip(";")) for r in block) - 1) < 1e-5


def test_binary_log_header_records_and_latent_per_window(tmp_path, models):
    paths, recording = models
    text = run_predict(tmp_path, paths["binary"], recording, "--batch_size", "5", "--latent_extract",
                       "--threshold", "0.6")
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
    probs = torch.cat([b.probs for b in stream([paths["binary"]], recording, batch_size=5)])
    assert len(rows) == 58
    for i, (start, end, pred, _, _, prob) in enumerate(rows):
        assert prob == repr(float(probs[i, 1])) and pred == ("1" if float(prob) >= 0.6 else "0")
    with open(tmp_path / "out" / "animal-spot-classifier.p", "rb") as handle:
        latent = pickle.load(handle)
    assert list(latent) == ["filenames", "features", "spectra_input"]
    # one entry per window, as the original's default batch size 1 writes them
    assert len(latent["filenames"]) == len(latent["features"]) == len(latent["spectra_input"]) == 58
    assert latent["filenames"][0].endswith("rec_0.0_0.3.wav") and latent["features"][0].shape == (512,)
    assert tuple(latent["spectra_input"][0].shape[:2]) == (1, 1)


def test_folders_are_searched_and_bad_files_skipped(tmp_path, models):
    paths, recording = models
    folder = tmp_path / "recs"
    (folder / "day2").mkdir(parents=True)
    for name in ("a.x.wav", "day2/a.y.WAV"):
        os.symlink(recording, folder / name)
    data, rate = sf.read(recording)
    sf.write(str(folder / "day2" / "c.flac"), data, rate)
    (folder / "b.wav").write_bytes(b"RIFF-broken")
    out = tmp_path / "o"
    argv = ["--model_path", paths["resnet"], "--input_file", str(folder), "--output_dir", str(out), "--num_workers",
            "1", "--no_progress"]
    assert predict.main(argv) == 1                                      # b.wav failed ...
    assert sorted(os.listdir(out)) == ["a.x_predict_output.log", "day2", "predict_journal.all.jsonl",
                                       "predict_run.json"]                 # ... the rest ran, sub-folders mirrored
    failed = [json.loads(line) for line in open(out / "predict_journal.all.jsonl") if '"failed"' in line]
    assert [f["recording"] for f in failed] == [str(folder / "b.wav")] and "Format not recognised" in failed[0]["reason"]
    assert sorted(os.listdir(out / "day2")) == ["a.y_predict_output.log", "c_predict_output.log"]
    assert len(records((out / "day2" / "c_predict_output.log").read_text())) == 6    # 0.3 s (model) windows, 1 s hop
    assert predict.main(["--model_path", str(tmp_path / "missing.pk"), "--input_file", recording]) == 1
    assert predict.main(["--model_path", paths["resnet"]]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main(["--model_path", paths["resnet"], "--input_file", str(empty)]) == 1


def test_an_interrupted_season_resumes(tmp_path, models, caplog):
    paths, recording = models
    folder = tmp_path / "season"
    folder.mkdir()
    for name in ("d1.wav", "d2.wav"):
        shutil.copy(recording, folder / name)
    argv = ["--model_path", paths["resnet"], "--input_file", str(folder), "--output_dir", str(tmp_path / "o"),
            "--num_workers", "0", "--no_progress", "--raven"]
    assert predict.main(argv) == 0
    log2 = tmp_path / "o" / "d2_predict_output.log"
    log2.write_text("".join(log2.read_text().splitlines(keepends=True)[:15]))     # d2 was cut short
    before = (tmp_path / "o" / "d1_predict_output.log").stat().st_mtime_ns
    assert predict.main(argv) == 0
    assert (tmp_path / "o" / "d1_predict_output.log").stat().st_mtime_ns == before   # complete: skipped
    assert len(records(log2.read_text())) == 6                                       # redone
    assert predict.main(argv + ["--overwrite"]) == 0
    assert (tmp_path / "o" / "d1_predict_output.log").stat().st_mtime_ns != before


def test_raven_tables_equal_the_evaluation_step(tmp_path, models):
    paths, recording = models
    probs = torch.cat([b.probs for b in stream([paths["binary"]], recording)])[:, 1]
    threshold = str(float(probs.median()))            # about half the windows are detections
    run_predict(tmp_path, paths["binary"], recording, "--raven", "--threshold", threshold)
    out = tmp_path / "out"
    ours = (out / "rec.Table.1.selections.txt").read_text().splitlines()
    theirs = open(evaluate(str(out / "rec_predict_output.log"), str(tmp_path / "ev"),
                           float(threshold))[0]).read().splitlines()
    assert ours[0] == theirs[0] + "\tScore\tBegin Path\tBegin Date Time"
    assert len(ours) == len(theirs) > 1
    assert ["\t".join(row.split("\t")[:9]) for row in ours[1:]] == theirs[1:]
    assert all(row.split("\t")[10:] == ["rec.wav", ""] for row in ours[1:])    # no start time in the name
    log = parse_log(str(out / "rec_predict_output.log"))
    for row in ours[1:]:
        begin, end, score = float(row.split("\t")[3]), float(row.split("\t")[4]), float(row.split("\t")[9])
        inside = [w.prob for w in log.windows.values() if begin <= w.start and w.end <= end + 1e-9]
        assert score == pytest.approx(max(inside), abs=1e-4)
    combined = (out / "combined.Table.1.selections.txt").read_text().splitlines()
    assert combined[0].split("\t")[-5:] == ["Begin File", "File Offset (s)", "Score", "Begin Path", "Begin Date Time"]
    assert [r.split("\t")[3:8] for r in combined[1:]] == [r.split("\t")[3:8] for r in ours[1:]]   # one file: offset 0
    assert all(r.split("\t")[9] == "rec.wav" for r in combined[1:])


def test_ensemble_is_the_mean_and_classes_must_match(tmp_path, models):
    paths, recording = models
    single = [torch.cat([b.probs for b in stream([paths[n]], recording)]) for n in ("resnet", "convnext")]
    both = torch.cat([b.probs for b in stream([paths["resnet"], paths["convnext"]], recording)])
    torch.testing.assert_close(both, (single[0] + single[1]) / 2, rtol=0, atol=1e-7)
    text = run_predict(tmp_path, f"{paths['resnet']},{paths['convnext']}", recording)
    assert len(records(text)) == 58
    status = predict.main(["--model_path", paths["resnet"], paths["binary"], "--input_file", recording,
                           "--no_progress"])
    assert status == 1


def test_ensemble_with_different_classes_names_both_files(models):
    paths, _ = models
    from models.model_file import ModelFileError
    with pytest.raises(ModelFileError) as error:
        Predictor([PredictionModel.open(paths["resnet"]), PredictionModel.open(paths["binary"])])
    assert paths["resnet"] in str(error.value) and paths["binary"] in str(error.value)
    assert "only in the first: K1, K2" in str(error.value)


def test_detector_then_classifier_equals_the_two_runs_combined(tmp_path, models):
    paths, recording = models
    detector = Predictor([PredictionModel.open(paths["detector"])], 0.3, 0.1, prefetch=False)
    target = torch.cat([b.probs for b in detector.stream(recording)])[:, 1]
    threshold = float(target.median())                         # about half the windows pass
    passed = target >= threshold
    assert 0 < int(passed.sum()) < len(passed)
    combined = torch.cat([b.probs for b in stream([paths["resnet"]], recording,
                                                  detector=PredictionModel.open(paths["detector"]),
                                                  detector_threshold=threshold)])
    classifier = torch.cat([b.probs for b in stream([paths["resnet"]], recording)])
    expected = torch.zeros_like(classifier)
    expected[:, 2] = 1.0                                       # rejected windows are noise
    expected[passed] = classifier[passed]
    torch.testing.assert_close(combined, expected, rtol=0, atol=1e-6)
    text = run_predict(tmp_path, paths["resnet"], recording, "--detector_path", paths["detector"], "--raven",
                       "--detector_threshold", str(threshold))
    assert len(records(text)) == 58 and "pred_class=" in text
    noise_only = [r for r in records(text) if r[3] == "noise"]
    assert len(noise_only) >= len(passed) - int(passed.sum())   # every rejected window is noise


def test_per_class_thresholds_decide_without_threshold_flag(tmp_path, models):
    """A model with thresholds decides on calibrated probabilities when no --threshold is
    given; an explicit --threshold keeps the original's rule; the log keeps raw numbers."""
    paths, recording = models
    state = torch.load(paths["resnet"], weights_only=True)
    state["thresholds"], state["temperature"] = {"K1": 0.2, "K2": 0.99}, 0.5
    tuned = str(tmp_path / "tuned.pk")
    torch.save(state, tuned)
    raw = records(run_predict(tmp_path / "a", tuned, recording, "--threshold", "0.5"))
    calibrated = records(run_predict(tmp_path / "b", tuned, recording))
    assert [r[5] for r in raw] == [r[5] for r in calibrated]            # same raw probabilities in the log
    rule = DecisionRule(0.5, {"K1": 0.2, "K2": 0.99}, 0.5)
    names = {"K1": 0, "K2": 1, "noise": 2}
    probs = torch.cat([b.probs for b in stream([tuned], recording)])
    for row, p in zip(calibrated, probs):
        detected = rule.decide(p.tolist(), load_model(tuned).class_map)
        assert row[2] == ("1" if detected is not None else "0")
        assert row[3] in names
    assert [r[2] for r in raw] == ["1" if float(r[5]) >= 0.5 else "0" for r in raw]
    # evaluation with threshold=model reads the same thresholds from the model file named in the log
    table = open(evaluate(str(tmp_path / "b" / "out" / "rec_predict_output.log"), str(tmp_path / "ev"),
                          "model")[0]).read()
    assert table.startswith("Selection\t")


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
    assert parse_log(str(path)).windows["0.0-0.3"].probs == [0.9, 0.05, 0.05]
    bad = tmp_path / "bad_predict_output.log"
    bad.write_text(LOG.replace("{records}", "12:00:01|I|time=0.0-0.3, pred=1, prob=abc\n"))
    with pytest.raises(LogFormatError, match=r"bad_predict_output.log:6"):
        parse_log(str(bad))


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


def test_jit_model_predicts_the_same_and_visualize_writes_one_pdf_per_window(tmp_path, models):
    from models.model_file import save_jit_model
    paths, recording = models
    loaded = load_model(paths["resnet"])
    jit_path = str(tmp_path / "jit.pk")
    save_jit_model(jit_path, loaded.model, torch.rand(1, 1, 71, 32), loaded.spec)
    plain = records(run_predict(tmp_path / "plain", paths["resnet"], recording, "--batch_size", "16"))
    jit = records(run_predict(tmp_path / "jit", jit_path, recording, "--jit_load", "--batch_size", "16",
                              "--visualize", "--hop", "1.0"))
    assert len(plain) == 58 and len(jit) == 6
    tolerance = error_bounds.network_tolerance(loaded.model, torch.cat([b.inputs for b in stream([paths["resnet"]],
                                                                                                  recording)]))
    assert all(a[3] == b[3] and abs(float(a[5]) - float(b[5])) <= tolerance for a, b in zip(plain[::10], jit))
    pdfs = sorted(p for p in os.listdir(tmp_path / "jit" / "out") if p.endswith(".pdf"))
    assert len(pdfs) == 6 and "net_input_spec_0_" in pdfs[0] and pdfs[0].endswith("_rec.pdf")
    assert predict.main(["--model_path", jit_path, "--input_file", recording, "--output_dir", str(tmp_path / "l"),
                         "--jit_load", "--latent_extract", "--no_progress"]) == 1   # no hidden layer in a traced model


def test_start_prediction_runs_predict_from_a_config(tmp_path, models):
    import subprocess
    import sys
    paths, recording = models
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = tmp_path / "config"
    cfg.write_text(f"src_dir=/*USER-SPECIFIC-DIRECTORY*/\nmodel_path={paths['binary']}\n"
                   f"output_dir={tmp_path / 'out'}\nsequence_len=0.30\nhop=0.10 # 0.1 s\nthreshold=0.75\n"
                   f"batch_size=4\nnum_workers=0\nno_cuda=true\nvisualize=false\nraven=true\ninput_file={recording}\n")
    result = subprocess.run([sys.executable, os.path.join(root, "PREDICTION", "start_prediction.py"), str(cfg)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Prediction Command:" in result.stderr
    assert len(records((tmp_path / "out" / "rec_predict_output.log").read_text())) == 58
    assert (tmp_path / "out" / "rec.Table.1.selections.txt").exists()


def test_python_use_of_the_core(models):
    paths, recording = models
    predictor = Predictor.from_files([paths["resnet"]], hop=0.25)
    probs, starts, ends = predictor.predict_file(recording)
    assert predictor.sequence_len == 0.3                                 # the model's training segment
    assert probs.shape == (len(starts), 3) and isinstance(probs, np.ndarray)
    assert starts[1] == 0.25 and ends[0] == round(4799 / 16000, 3)


def test_a_recording_sampled_below_twice_fmax_is_named(tmp_path, models, capsys):
    paths, _ = models
    low = str(tmp_path / "low.wav")
    make_recording(low, 1.0, 8000, [("upsweep", 0.2)])          # the models' fmax is 8000 Hz
    assert predict.main(["--model_path", paths["binary"], "--input_file", low, "--output_dir", str(tmp_path / "o"),
                         "--num_workers", "0", "--no_progress"]) == 0
    err = capsys.readouterr().err
    assert f"{low}: sampled at 8000 Hz, below twice the model's fmax (8000 Hz)" in err
