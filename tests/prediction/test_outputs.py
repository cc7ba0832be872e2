"""Outputs that fit every next tool: the sinks read back by their formats' readers, event
post-processing on constructed probabilities, multi-channel recordings, IoU matching,
the model card, the unknown label in every output, and PAMGuard's reading of TorchScript
files."""

import csv
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch

import predict
from evaluation.events import Matching, score
from evaluation.raven import Event, read_table
from prediction.decisions import Decider, DecisionRule, PostProcessing
from evaluation.log_format import parse_log
from utils.classmap import ClassMap
from utils.synthetic import call_signal

BINARY = ClassMap.from_names(["noise", "target"])


def decided(probs, post, rule=DecisionRule(0.5), class_map=BINARY, hop=0.25, window=0.5):
    """Events of a constructed sequence of p(target) (binary) or probability rows."""
    rows = [[1 - p, p] for p in probs] if np.ndim(probs[0]) == 0 else probs
    decider = Decider(rule, class_map, post)
    starts = [round(i * hop, 3) for i in range(len(rows))]
    out = decider.feed(starts, [round(s + window, 3) for s in starts], np.asarray(rows))
    assert len(out) == len(rows) - post.lag                # decided after smooth // 2 windows of lag
    out += decider.flush()
    assert [w.start for w in out] == starts and all(w.probs == list(map(float, r)) for w, r in zip(out, rows))
    return [(e.begin, e.end, e.label) for e in decider.events("r")], out


def test_post_processing_on_constructed_probabilities():
    run = [0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.1]
    # windows 0.5 s every 0.25 s: detections 1-2 -> 0.25-1.0, 6 -> 1.5-2.0, 11 -> 2.75-3.25
    assert decided(run, PostProcessing())[0] == [(0.25, 1.0, "target"), (1.5, 2.0, "target"),
                                                 (2.75, 3.25, "target")]
    assert decided(run, PostProcessing(merge_gap=0.5))[0] == [(0.25, 2.0, "target"), (2.75, 3.25, "target")]
    assert decided(run, PostProcessing(merge_gap=0.75))[0] == [(0.25, 3.25, "target")]
    assert decided(run, PostProcessing(min_duration=0.6))[0] == [(0.25, 1.0, "target")]
    events, windows = decided(run, PostProcessing(smooth=3))        # median of 3 removes single-window spikes
    assert events == [(0.25, 1.0, "target")]
    assert windows[6].probs == [0.1, 0.9] or windows[6].probs == pytest.approx([0.1, 0.9])   # raw kept
    assert windows[6].decided_on == pytest.approx([0.9, 0.1]) and windows[6].flag == 0
    gap = [0.9, 0.9, 0.2, 0.9, 0.9]
    assert decided(gap, PostProcessing(smooth=3))[0] == [(0.0, 1.5, "target")]               # a dip filled
    assert decided(gap, PostProcessing(smooth=3, smooth_method="mean"))[0] == [(0.0, 1.5, "target")]
    edges = [0.6, 0.6, 0.0, 0.6]                                     # the ends repeat their window
    assert decided(edges, PostProcessing(smooth=3, smooth_method="mean"))[0] == [(0.0, 0.5, "target")]
    assert decided(edges, PostProcessing(smooth=3))[0] == [(0.0, 1.25, "target")]
    three = ClassMap.from_names(["K1", "K2", "noise"])             # another class starts where one ends
    rows = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]
    assert decided(rows, PostProcessing(), class_map=three)[0] == [(0.0, 0.5, "K1"), (0.5, 0.75, "K2")]


def test_iou_matching_differs_from_the_overlap_rule_where_it_should():
    inside = {"r": [Event("r", 0.5, 1.0, "K1", 0.9)]}
    long_call = {"r": [Event("r", 0.0, 2.0, "K1")]}
    assert score(inside, long_call, Matching("overlap", 0.5)).total().tp == 1    # all of the shorter event
    assert score(inside, long_call, Matching("iou", iou=0.3)).total().tp == 0    # IoU 0.25
    detections = {"r": [Event("r", 0.5, 1.5, "K1", 0.9), Event("r", 0.0, 0.9, "K1", 0.5)]}
    annotations = {"r": [Event("r", 0.0, 1.0, "K1"), Event("r", 1.0, 2.0, "K1")]}
    assert score(detections, annotations, Matching("overlap", 0.5)).total().tp == 1   # greedy: best score first
    assert score(detections, annotations, Matching("iou", iou=0.3)).total().tp == 2   # the most matches


@pytest.fixture(scope="module")
def season(trained, tmp_path_factory):
    """A 6 s recording with two known calls and one the model never heard, predicted into
    every format."""
    root = tmp_path_factory.mktemp("season")
    rng = np.random.default_rng(4)
    signal = 0.01 * rng.standard_normal(6 * 16000)
    for shape, start in (("upsweep", 1.0), ("downsweep", 3.0), ("harmonic", 4.5)):
        i = int(start * 16000)
        signal[i:i + 4800] += call_signal(shape, 4800, 16000, rng)
    sf.write(str(root / "rec.wav"), signal.astype(np.float32), 16000)
    out = root / "out"
    argv = ["--model_path", str(trained / "m" / "ANIMAL-SPOT.pk"), "--input_file", str(root / "rec.wav"),
            "--output_dir", str(out), "--sequence_len", "0.2", "--hop", "0.05", "--threshold", "0.5",
            "--num_workers", "0", "--no_progress", "--raven", "--unknown", "--format", "csv", "parquet",
            "audacity", "json"]
    assert predict.main(argv) == 0
    return root, out


def test_every_sink_writes_what_its_readers_read(season):
    root, out = season
    assert not [n for n in os.listdir(out) if n.startswith(".") or n.endswith((".tmp", ".partial"))]
    raven = (out / "rec.Table.1.selections.txt").read_text().splitlines()
    header, rows = raven[0].split("\t"), [line.split("\t") for line in raven[1:]]
    assert len(rows) >= 2
    events = read_table(str(out / "rec.Table.1.selections.txt"))
    assert [(e.begin, e.end, e.label) for e in events] == [(float(r[3]), float(r[4]), r[7]) for r in rows]
    with open(out / "rec.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == header and table[1:] == [[cell.strip() for cell in r] for r in rows]
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    assert pacsv.read_csv(out / "rec.csv").column_names == header
    parquet = pq.read_table(out / "rec.parquet")
    assert parquet.column_names == header and parquet.num_rows == len(rows)
    assert parquet.column("Begin time (s)").to_pylist() == [float(r[3]) for r in rows]
    assert parquet.column("Sound type").to_pylist() == [r[7] for r in rows]
    assert parquet.column("Score").to_pylist() == pytest.approx([float(r[9]) for r in rows])
    label_track = (out / "rec.audacity.txt").read_text().splitlines()
    grammar = re.compile(r"^(\d+\.\d+)\t(\d+\.\d+)\t([^\t]+)$")          # Audacity's label track
    assert [tuple(grammar.match(line).groups()) for line in label_track] == \
        [(f"{float(r[3]):.6f}", f"{float(r[4]):.6f}", r[7]) for r in rows]
    document = json.loads((out / "rec.json").read_text())
    assert document["recording"]["relative_path"] == "rec.wav" and document["recording"]["seconds"] == 6.0
    assert document["model"]["classes"] == {"K1": 0, "K2": 1, "K3": 2, "noise": 3}
    assert [(e["begin"], e["end"], e["label"]) for e in document["events"]] == \
        [(float(r[3]), float(r[4]), r[7]) for r in rows]


def test_unknown_detections_are_labelled_in_the_log_and_every_table(season, trained):
    from evaluation.calibration import is_unknown
    from prediction.core import Predictor, PredictionModel

    root, out = season
    log = parse_log(str(out / "rec_predict_output.log"))
    text = (out / "rec_predict_output.log").read_text()
    predictor = Predictor([PredictionModel.open(str(trained / "m" / "ANIMAL-SPOT.pk"))], 0.2, 0.05, prefetch=False,
                          unknown=True)
    flags, detections = [], []
    for batch in predictor.stream(str(root / "rec.wav"), pooled=True):
        flags += list(is_unknown(predictor.unknown, batch.pooled.double().numpy(), batch.probs.double().numpy()))
        top = batch.probs.max(dim=1)
        detections += [bool(p >= 0.5 and c != 3) for p, c in zip(top.values, top.indices)]
    expected = [f and d for f, d in zip(flags, detections)]
    assert [r.unknown for r in log.windows.values()] == expected and any(expected) and not all(expected)
    assert text.count("pred_class=unknown") == sum(expected)
    assert all(abs(sum(r.probs) - 1) < 1e-5 for r in log.windows.values())     # the raw softmax stays
    labels = {r.split("\t")[7] for r in (out / "rec.Table.1.selections.txt").read_text().splitlines()[1:]}
    assert "unknown" in labels
    assert "unknown" in {e["label"] for e in json.loads((out / "rec.json").read_text())["events"]}


def test_each_channel_equals_the_mono_prediction_of_that_channel(tmp_path, trained):
    rng = np.random.default_rng(8)
    quiet = (0.01 * rng.standard_normal(3 * 16000)).astype(np.float32)
    calls = quiet.copy()
    calls[16000:16000 + 4800] += call_signal("upsweep", 4800, 16000, rng).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([quiet, calls], axis=1), 16000, subtype="FLOAT")
    sf.write(tmp_path / "ch1.wav", quiet, 16000, subtype="FLOAT")
    sf.write(tmp_path / "ch2.wav", calls, 16000, subtype="FLOAT")
    common = ["--model_path", str(trained / "m" / "ANIMAL-SPOT.pk"), "--sequence_len", "0.2", "--hop", "0.1",
              "--threshold", "0.5", "--num_workers", "0", "--no_progress", "--raven", "--batch_size", "8",
              "--memory_format", "contiguous"]
    for name in ("stereo", "ch1", "ch2"):
        extra = ["--channels", "each"] if name == "stereo" else []
        assert predict.main(common + ["--input_file", str(tmp_path / f"{name}.wav"), "--output_dir",
                                      str(tmp_path / name)] + extra) == 0
    for c in (1, 2):
        each = parse_log(str(tmp_path / "stereo" / f"stereo_ch{c}_predict_output.log"))
        mono = parse_log(str(tmp_path / f"ch{c}" / f"ch{c}_predict_output.log"))
        assert list(each.windows) == list(mono.windows)
        assert [r.probs for r in each.windows.values()] == [r.probs for r in mono.windows.values()]
    rows = [r.split("\t") for r in (tmp_path / "stereo" / "stereo.Table.1.selections.txt").read_text().splitlines()[1:]]
    mono_rows = {c: [r.split("\t") for r in (tmp_path / f"ch{c}" / f"ch{c}.Table.1.selections.txt").read_text()
                     .splitlines()[1:]] for c in (1, 2)}
    expected = sorted([(float(r[3]), c, r[4], r[7]) for c in (1, 2) for r in mono_rows[c]])
    assert sorted((float(r[3]), int(r[2]), r[4], r[7]) for r in rows) == expected
    assert any(r[2] == "2" for r in rows)
    assert predict.main(common + ["--input_file", str(tmp_path / "stereo.wav"), "--output_dir",
                                  str(tmp_path / "max"), "--channels", "max"]) == 0
    best = parse_log(str(tmp_path / "max" / "stereo_predict_output.log"))
    one = parse_log(str(tmp_path / "stereo" / "stereo_ch1_predict_output.log")).windows
    two = parse_log(str(tmp_path / "stereo" / "stereo_ch2_predict_output.log")).windows
    for key, record in best.windows.items():
        assert record.probs == max(one[key].probs, two[key].probs, key=max)


def test_model_card_names_every_class_with_its_test_figure(trained, capsys):
    card = (trained / "m" / "MODEL_CARD.md").read_text()
    metrics = json.loads((trained / "m" / "metrics.json").read_text())
    for name, figures in metrics["test"]["per_class"].items():
        recall = "n/a" if figures["recall"] is None else f"{100 * figures['recall']:.1f} %"
        assert re.search(rf"^\| {name} \| {re.escape(recall)}", card, re.M), name
    for words in ("## What it is for", "## Where it was not tested", "Sample rates of the clips: 16000 Hz: 80",
                  "split hash", "Largest confusions", "temperature", "seed 3"):
        assert words in card, words
    assert predict.main(["--describe", str(trained / "m" / "ANIMAL-SPOT.pk")]) == 0
    printed = capsys.readouterr().out
    assert printed.split("\n", 1)[1].rstrip() == card.split("\n", 1)[1].rstrip()   # the same card, from the file alone


# --------------------------------------------------------------------------- PAMGuard
def pamguard_transforms(text: str):
    """How PAMGuard reads the ``transforms`` extra file: lenient JSON whose values are
    strings in the original's ``{key : value}`` style; transforms ordered by where each key
    first appears in the text; inside a value, ``key : value`` pairs split at top-level
    commas (a value may hold braces, e.g. the class dictionary)."""
    outer = json.loads(text)
    order = sorted(outer, key=text.index)
    parsed = {}
    for key in order:
        value = outer[key].strip()
        assert value.startswith("{") and value.endswith("}"), (key, value)
        body, depth, part, pairs = value[1:-1], 0, "", []
        for char in body + ",":
            if char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
            if char == "," and depth == 0:
                pairs.append(part)
                part = ""
            else:
                part += char
        parsed[key] = {p.split(":", 1)[0].strip(): p.split(":", 1)[1].strip() for p in pairs if p.strip()}
    return order, parsed


@pytest.mark.parametrize("min_max", [True, False])
def test_torchscript_files_keep_what_pamguard_reads(tmp_path, call_set, min_max):
    import main as train_main
    from conftest import small_run
    out = tmp_path / "m"
    assert train_main.main(["--data_dir", str(call_set), "--model_dir", str(out), "--num_classes", "4",
                            "--max_train_epochs", "1", "--jit_save"] + small_run(200, 3, 0, "--no_progress") +
                           (["--min_max_norm"] if min_max else [])) == 0
    extra = {"dataOpts": "", "transforms": ""}                         # the only two files PAMGuard opens
    model = torch.jit.load(str(out / "ANIMAL-SPOT.pk"), _extra_files=extra)
    data_opts = json.loads(extra["dataOpts"])
    order, transforms = pamguard_transforms(extra["transforms"].decode("utf-8"))
    assert order == ["load_audio", "pre_emph", "spectrogram", "freq_compression", "amplitude_to_decibel", "normalize",
                     "class_info", "seg_size"]
    assert transforms["load_audio"]["sr"] == str(data_opts["sr"]) == "16000"
    assert transforms["spectrogram"] == {"fft": "256", "hop": "64", "center": "False"}
    assert transforms["freq_compression"] == {"type": "linear", "bins": "32", "fmin": "0", "fmax": "8000"}
    assert (transforms["normalize"]["min_db"] == "None") == min_max == (transforms["normalize"]["min_max"] == "True")
    names = json.loads(transforms["class_info"]["name_class"].replace("'", '"'))
    assert names == {"K1": 0, "K2": 1, "K3": 2, "noise": 3} and transforms["class_info"]["num_class"] == "4"
    size_ms = float(transforms["seg_size"]["size_ms"])
    assert size_ms == 200
    frames = int(size_ms / 1000 * 16000 / 64)                          # PAMGuard's own spectrogram of a segment
    assert model(torch.rand(1, 1, frames, 32)).shape == (1, 4)


def test_score_reports_event_f1_per_setting_and_both_matchings(season, trained, tmp_path):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "EVALUATION"))
    import score as score_cli

    root, out = season
    predictions = tmp_path / "logs"                   # the calls by their classes (the season's run says unknown)
    assert predict.main(["--model_path", str(trained / "m" / "ANIMAL-SPOT.pk"), "--input_file", str(root / "rec.wav"),
                         "--output_dir", str(predictions), "--sequence_len", "0.2", "--hop", "0.05", "--threshold",
                         "0.5", "--num_workers", "0", "--no_progress"]) == 0
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "rec.Table.1.selections.txt").write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSound type\n"
        "1\tSpectrogram 1\t1\t1.0\t1.3\tK1\n2\tSpectrogram 1\t1\t3.0\t3.3\tK2\n")
    results = {}
    for matching in ("overlap", "iou"):
        folder = tmp_path / matching
        assert score_cli.main(["--predictions", str(predictions), "--annotations", str(annotations), "--output_dir",
                               str(folder), "--matching", matching, "--merge_gap", "0", "0.3", "--min_duration",
                               "0", "0.2", "--smooth", "1", "3"]) == 0
        results[matching] = json.loads((folder / "scores.json").read_text())
        settings = list(csv.DictReader(open(folder / "settings.csv")))
        assert len(settings) == 8 and {(r["merge_gap"], r["min_duration"], r["smooth"]) for r in settings} == \
            {(g, d, s) for g in ("0.0", "0.3") for d in ("0.0", "0.2") for s in ("1", "3")}
        first = settings[0]
        assert results[matching]["all"]["f1"] is not None and float(first["f1"]) > 0   # calls were found
        assert float(first["f1"]) == pytest.approx(results[matching]["all"]["f1"])
    assert results["overlap"]["matching"]["kind"] == "overlap" and results["iou"]["matching"]["kind"] == "iou"


def test_training_can_use_one_channel_of_stereo_clips(tmp_path):
    from data.audiodataset import Dataset
    from data.features import FeatureOptions
    rng = np.random.default_rng(1)
    tone = call_signal("upsweep", 4800, 16000, rng).astype(np.float32)
    quiet = (0.01 * rng.standard_normal(4800)).astype(np.float32)
    (tmp_path / "s" / "K1").mkdir(parents=True)
    (tmp_path / "m" / "K1").mkdir(parents=True)
    name = "K1/K1-x_0001_2020_T1_0_300.wav"
    sf.write(tmp_path / "s" / name, np.stack([quiet, tone], axis=1), 16000, subtype="FLOAT")
    sf.write(tmp_path / "m" / name, tone, 16000, subtype="FLOAT")
    options = FeatureOptions(sr=16000, n_fft=256, hop_length=64, n_freq_bins=32, fmin=0, fmax=8000)
    second = Dataset([name], str(tmp_path / "s"), None, ["K1"], options=options, seq_len=60, channel=2)[0][0]
    mono = Dataset([name], str(tmp_path / "m"), None, ["K1"], options=options, seq_len=60)[0][0]
    mixed = Dataset([name], str(tmp_path / "s"), None, ["K1"], options=options, seq_len=60)[0][0]
    assert torch.equal(second, mono) and not torch.equal(mixed, mono)
