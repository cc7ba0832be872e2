"""Bad input gets one line, not a traceback: an output folder that cannot be made, a reader
that stops early (``| head``), an empty labels folder, a Raven table whose row was cut short
(a name with a line break)."""

import os
import subprocess
import sys

import pytest

import demo
import embed
import score
from conftest import SRC, quick_model
from reviews.units import ReviewError, load_units
from utils.synthetic import make_recording

HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSound type\n"


def tables(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rec.Table.1.selections.txt").write_text(HEADER + rows)
    return folder


def one_line(text):
    return "Traceback" not in text and len([line for line in text.splitlines() if "|E|" in line or "ERROR" in line]) == 1


def test_score_and_demo_name_an_output_folder_they_cannot_make(tmp_path, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    predictions = tables(tmp_path / "pred", "1\tSpectrogram 1\t1\t1.0\t2.0\tK1\n")
    annotations = tables(tmp_path / "anno", "1\tSpectrogram 1\t1\t1.0\t2.0\tK1\n")
    assert score.main(["--predictions", str(predictions), "--annotations", str(annotations), "--output_dir",
                       str(blocker / "scores")]) == 1
    said = capfd.readouterr()
    assert one_line(said.err + said.out) and str(blocker / "scores") in said.err + said.out
    assert demo.main(["--out", str(blocker / "demo")]) == 1
    said = capfd.readouterr()
    assert "cannot create it" in said.err and "Traceback" not in said.err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    assert demo.main(["--out", str(tmp_path / "mine")]) == 1                   # never emptied
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_a_table_row_cut_short_is_named_not_a_traceback(tmp_path, capfd):
    recordings = tmp_path / "rec"
    make_recording(str(recordings / "rec.wav"), 3.0, 16000, [("upsweep", 1.0)], seed=1)
    combined = tmp_path / "combined"                   # Begin Path of a name with a line break in it
    combined.mkdir()
    (combined / "combined.Table.1.selections.txt").write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSound type\tBegin Path\tFile Offset (s)\n"
        "1\tSpectrogram 1\t1\t1.0\t2.0\tK1\trec.wav\t1.0\n2\tSpectrogram 1\t1\t3.0\t4.0\tK1\tre\nc.wav\t3.0\n")
    with pytest.raises(ReviewError, match="malformed row"):
        load_units(str(combined), str(recordings))
    cut = tables(tmp_path / "pred", "1\tSpectrogram 1\t1\t1.0\t2.0\tK1\n2\tSpectrogram 1\n")
    annotations = tables(tmp_path / "anno", "1\tSpectrogram 1\t1\t1.0\t2.0\tK1\n")
    assert score.main(["--predictions", str(cut), "--annotations", str(annotations), "--output_dir",
                       str(tmp_path / "scores")]) == 1
    said = capfd.readouterr()
    assert one_line(said.err + said.out) and "rec.Table.1.selections.txt:3: malformed row" in said.err + said.out
    with pytest.raises(ReviewError, match="selections.txt:3: malformed row"):
        load_units(str(cut), str(recordings))


def test_a_model_card_read_by_head_is_no_error(tmp_path):
    quick_model(tmp_path / "m.pk", confident=False)
    reader = subprocess.Popen([sys.executable, os.path.join(SRC, "predict.py"), "--describe", str(tmp_path / "m.pk")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()                              # `| head` that has read what it wanted: the pipe is closed
    assert reader.wait(timeout=120) == 0
    assert b"Traceback" not in reader.stderr.read()


def test_embed_fit_names_an_empty_labels_folder(tmp_path, capfd):
    quick_model(tmp_path / "m.pk", confident=False)
    make_recording(str(tmp_path / "rec" / "a.wav"), 2.0, 16000, [("upsweep", 0.5)], seed=1)
    assert embed.main(["--model_path", str(tmp_path / "m.pk"), "--input_file", str(tmp_path / "rec"), "--store",
                       str(tmp_path / "store"), "--hop", "0.5"]) == 0
    (tmp_path / "labels").mkdir()
    capfd.readouterr()
    assert embed.main(["fit", "--store", str(tmp_path / "store"), "--labels", str(tmp_path / "labels"), "--out",
                       str(tmp_path / "head.pk")]) == 1
    said = capfd.readouterr()
    assert one_line(said.err + said.out) and "--labels" in said.err + said.out and "no Raven selection tables" in \
        said.err + said.out
    assert not (tmp_path / "head.pk").exists()
