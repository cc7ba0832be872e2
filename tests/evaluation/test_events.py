"""Event-level evaluation against annotations, and training clips from annotations."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from evaluation.raven import Event, TableError, read_table
from evaluation.events import score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSound type\n"


def table(path, rows, header=HEADER, views=("Spectrogram 1",)):
    lines = [header]
    for number, (begin, end, label, *_) in enumerate(rows, start=1):
        for view in views:
            lines.append(f"{number}\t{view}\t1\t{begin}\t{end}\t500\t9000\t{label}\n")
    path.write_text("".join(lines))
    return str(path)


def ev(begin, end, label, score=None, recording="rec"):
    return Event(recording, begin, end, label, score)


def figures(scores, label):
    f = scores.per_class[label].figures()
    return f["tp"], f["fp"], f["fn"]


def test_hand_made_matches():
    annotations = {"rec": [ev(1.0, 2.0, "K1"), ev(3.0, 4.0, "K1"), ev(5.0, 5.4, "K2"), ev(7.0, 8.0, "K1"),
                           ev(9.0, 9.5, "K2"), ev(9.6, 10.0, "K2")]}
    detections = {"rec": [
        ev(1.0, 2.0, "K1"),          # exact: TP
        ev(3.4, 4.6, "K1"),          # overlap 0.6 of the shorter (1.0): TP
        ev(5.0, 5.4, "K1"),          # wrong class: K1 FP, K2 FN, confusion K2 -> K1
        ev(7.0, 7.4, "K1"),          # a split call: the first half matches (overlap 0.4 of the shorter 0.4) ...
        ev(7.5, 8.0, "K1"),          # ... the second half finds the annotation taken: FP
        ev(9.0, 10.0, "K2"),         # merged calls: matches one (overlap 0.5 of 0.5), the other is missed
        ev(12.0, 13.0, "K2"),        # nothing there: FP
        ev(14.0, 15.0, "noise"),     # noise is not an event class
    ]}
    s = score(detections, annotations, min_overlap=0.5)
    assert figures(s, "K1") == (3, 2, 0)
    assert figures(s, "K2") == (1, 1, 2)
    assert "noise" not in s.per_class
    total = s.to_json()["all"]
    assert (total["tp"], total["fp"], total["fn"]) == (4, 3, 2)
    assert total["precision"] == pytest.approx(4 / 7) and total["recall"] == pytest.approx(4 / 6)
    assert total["f1"] == pytest.approx(8 / 13)
    assert s.confusion["K2"]["K1"] == 1 and s.confusion["K1"]["K1"] == 3 and s.confusion["(none)"]["K2"] == 1
    strict = score(detections, annotations, min_overlap=0.7)
    assert figures(strict, "K1") == (2, 3, 1)                 # 0.6 overlap no longer enough


def test_greedy_by_score_then_start_time():
    annotations = {"rec": [ev(0.0, 1.0, "K1")]}
    weak_first = {"rec": [ev(0.0, 0.8, "K1", 0.2), ev(0.2, 1.0, "K1", 0.9)]}
    s = score(weak_first, annotations)
    assert figures(s, "K1") == (1, 1, 0)
    unscored = {"rec": [ev(0.2, 1.0, "K1"), ev(0.0, 0.8, "K1")]}
    assert figures(score(unscored, annotations), "K1") == (1, 1, 0)


def test_tables_views_duplicates_and_columns(tmp_path, caplog):
    path = table(tmp_path / "rec.Table.1.selections.txt", [(1.0, 2.0, "K1"), (1.02, 2.0, "K1"), (3, 4, "K2")],
                 views=("Spectrogram 1", "Waveform 1"))
    events = read_table(path)
    assert len(events) == 3 and events[0].recording == "rec"        # each selection once, not per view
    s = score({"rec": [ev(1.0, 2.0, "K1")]}, {"rec": events})
    assert figures(s, "K1") == (1, 0, 0)                           # the 98 % overlapping twin counted once
    assert "overlap by 90 % or more" in caplog.text
    bad = table(tmp_path / "bad.Table.1.selections.txt", [(1, 2, "K1")], header="Selection\tBegin\tEnd\tLabel\n")
    with pytest.raises(TableError, match=r"bad.Table.1.selections.txt: no column 'begin time \(s\)'"):
        read_table(bad)
    multi = tmp_path / "multi.selections.txt"
    multi.write_text("Selection\tBegin Time (s)\tEnd Time (s)\tBegin File\tFile Offset (s)\tCall\n"
                     "1\t61.0\t62.0\tday1.wav\t1.0\tK1\n2\t125.0\t125.5\tday2.wav\t5.0\tK2\n")
    events = read_table(str(multi), "call")
    assert [(e.recording, e.begin, e.end, e.label) for e in events] == [("day1", 1.0, 2.0, "K1"),
                                                                        ("day2", 5.0, 5.5, "K2")]


def test_unannotated_and_unpredicted_recordings():
    notes = []
    s = score({"rec": [ev(1, 2, "K1")], "other": [ev(1, 2, "K1", recording="other")]},
              {"rec": [ev(1, 2, "K1")]}, unannotated_note=notes.append)
    assert figures(s, "K1") == (1, 1, 0) and notes == ["other"]
    with pytest.raises(ValueError, match="not predicted: lost"):
        score({"rec": []}, {"rec": [], "lost": [ev(1, 2, "K1", recording="lost")]})


LOG = """12:00:00|I|/data/rec.wav
12:00:00|I|Model Path: /m/ANIMAL-SPOT.pk
12:00:00|I|dataOpts: {'sr': 16000, 'fmin': 500, 'fmax': 7500}
12:00:00|I|class distribution: {'noise': 0, 'target': 1}
"""


def test_score_command_tables_logs_and_outputs(tmp_path):
    pred, anno, out = tmp_path / "pred", tmp_path / "anno", tmp_path / "out"
    for folder in (pred, anno):
        folder.mkdir()
    table(anno / "a.Table.1.selections.txt", [(1.0, 2.0, "target"), (4.0, 5.0, "target")])
    table(anno / "b.Table.1.selections.txt", [(0.5, 1.0, "target")])
    header = HEADER.rstrip("\n") + "\tScore\n"
    (pred / "a.Table.1.selections.txt").write_text(header + "1\tSpectrogram_1\t1\t3.0\t3.5\t500\t7500\ttarget\t0.9\n")
    probs = [0.1] * 5 + [0.9, 0.95] + [0.1] * 5          # windows of 0.3 s every 0.1 s: 0.5-0.9 detected
    (pred / "b_predict_output.log").write_text(LOG + "".join(
        f"12:00:01|I|time={round(i / 10, 3)}-{round(i / 10 + 0.3, 3)}, pred=0, prob={p}\n" for i, p in enumerate(probs)))
    probs = [0.1] * 10 + [0.9] * 8 + [0.1] * 5            # 1.0-2.0 detected
    (pred / "a_predict_output.log").write_text(LOG + "".join(  # the log wins over the table (whose 3.0-3.5 is wrong)
        f"12:00:01|I|time={round(i / 10, 3)}-{round(i / 10 + 0.3, 3)}, pred=0, prob={p}\n" for i, p in enumerate(probs)))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "EVALUATION", "score.py"), "--predictions", str(pred),
                             "--annotations", str(anno), "--output_dir", str(out), "--threshold", "0.5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert scores["classes"]["target"] == {"tp": 2, "fp": 0, "fn": 1, "precision": 1.0, "recall": 2 / 3,
                                           "f1": pytest.approx(0.8)}
    assert scores["all"]["tp"] == 2
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0] == "class,tp,fp,fn,precision,recall,f1" and lines[-1].startswith("all,2,0,1,")
    assert "target" in result.stdout and (out / "pr_curve.png").exists()
    (anno / "c.Table.1.selections.txt").write_text(HEADER + "1\tSpectrogram 1\t1\t1\t2\t0\t1\tK1\n")
    failed = subprocess.run([sys.executable, os.path.join(ROOT, "EVALUATION", "score.py"), "--predictions",
                             str(pred), "--annotations", str(anno), "--output_dir", str(out)], capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode == 1 and "not predicted: c" in failed.stderr and "Traceback" not in failed.stderr


def test_clips_from_raven(tmp_path):
    recordings, anno, out = tmp_path / "recs", tmp_path / "anno", tmp_path / "clips"
    recordings.mkdir()
    anno.mkdir()
    rng = np.random.default_rng(0)
    sf.write(str(recordings / "orca_2019_T07.wav"), 0.1 * rng.standard_normal(16000 * 10), 16000)
    sf.write(str(recordings / "day.flac"), 0.1 * rng.standard_normal(16000 * 5), 16000)
    table(anno / "orca_2019_T07.Table.1.selections.txt", [(1.0, 1.5, "K1"), (4.0, 4.25, "K-14")],
          views=("Spectrogram 1", "Waveform 1"))
    table(anno / "day.Table.1.selections.txt", [(2.0, 2.5, "K1")])
    command = [sys.executable, os.path.join(ROOT, "TRAINING", "clips_from_raven.py"), "--recordings",
               str(recordings), "--annotations", str(anno), "--out", str(out), "--noise_clips", "3", "--tape", "X"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = sorted(os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs)
    k1 = [n for n in names if n.startswith("K1/")]
    assert len(k1) == 2 and any(n.endswith("_2019_T07_1000_1500.wav") for n in k1)
    year = __import__("time").strftime("%Y", __import__("time").localtime(os.path.getmtime(recordings / "day.flac")))
    assert any(n.endswith(f"_{year}_X_2000_2500.wav") for n in k1)           # --tape for names without one
    assert any(n.startswith("K14/K14-raven_") for n in names)                 # '-' would end CLASSNAME
    noise = [n for n in names if n.startswith("noise/")]
    assert len(noise) == 6
    from data.filenames import class_name, tape_key
    selections = {"orca": [(1.0, 1.5), (4.0, 4.25)], "day": [(2.0, 2.5)]}
    for name in noise:
        start, end = (int(v) / 1000 for v in name[:-4].split("_")[-2:])
        assert class_name(name) == "noise" and tape_key(name) is not None
        spans = selections["orca" if "_T07_" in name else "day"]
        assert all(end <= a or start >= b for a, b in spans)                  # never overlapping a selection
    data, rate = sf.read(str(out / k1[0]))
    assert rate == 16000 and len(data) == 8000
    (anno / "lost.Table.1.selections.txt").write_text(HEADER + "1\tSpectrogram 1\t1\t1\t2\t0\t1\tK1\n")
    failed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "lost" in failed.stderr and "Traceback" not in failed.stderr


def test_the_precision_recall_picture_names_the_classes_it_cannot_draw(tmp_path):
    from evaluation.events import pr_curve

    points = {"K1": [(0.5, 0.9, 0.6), (0.9, 1.0, 0.3)], "K2": [(0.5, 0.5, 0.2), (0.9, None, 0.0)],
              "K3": [(0.5, None, 0.0), (0.9, None, 0.0)]}
    missing = pr_curve(points, str(tmp_path / "pr.png"), ["K1", "K2", "K3", "K4", "K5"])
    assert missing == ["K3", "K4", "K5"]                # no detection at any threshold, or not predicted at all
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
