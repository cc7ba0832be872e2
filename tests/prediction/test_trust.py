"""Season folders a user can trust: a recording's outputs belong to it (two sites' ``rec.wav``,
a file replaced in place), channel names never meet another recording's, a rerun's folder
holds exactly its run (or says which recordings it keeps), and names no table can hold are
refused before anything is written."""

import json

import numpy as np
import pytest
import soundfile as sf

import embed
import predict
from conftest import quick_model
from prediction.folder import PredictionFolder
from prediction.season import report_lines, read_journals
from utils.synthetic import make_recording


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return quick_model(tmp_path_factory.mktemp("trust") / "m.pk")


def argv(model, source, out, *extra):
    return ["--model_path", model, "--input_file", str(source), "--output_dir", str(out), "--sequence_len", "0.2",
            "--hop", "0.1", "--num_workers", "0", "--memory_format", "contiguous", "--no_progress", "--raven",
            "--threshold", "0.36"] + list(extra)


def first_line(path) -> str:
    return path.read_text().splitlines()[0].split("|", 2)[-1]


def said(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def journal_events(folder):
    return [(e["event"], e.get("recording")) for e in read_journals(str(folder))[0] if e["event"] != "planned"]


def test_a_recording_of_another_site_with_the_same_name_is_refused_not_skipped_or_overwritten(model, tmp_path,
                                                                                                 capsys):
    for site, seed, seconds in (("site1", 1, 2.0), ("site2", 2, 2.0), ("site3", 3, 3.0)):
        make_recording(str(tmp_path / site / "rec.wav"), seconds, 16000, [("upsweep", 0.5)], seed=seed)
    out = tmp_path / "out"
    assert predict.main(argv(model, tmp_path / "site1" / "rec.wav", out)) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith("predict_")}
    for site in ("site2", "site3"):            # same length: it was skipped; longer: it was overwritten
        capsys.readouterr()
        assert predict.main(argv(model, tmp_path / site / "rec.wav", out)) == 1
        message = said(capsys)
        assert f"{site}/rec.wav" in message and "site1/rec.wav" in message and "--output_dir" in message
        assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith("predict_")} == first
    assert journal_events(out) == [("done", str(tmp_path / "site1" / "rec.wav"))]      # nothing skipped, nothing done
    assert predict.main(argv(model, tmp_path / "site1" / "rec.wav", out)) == 0      # itself: skipped as complete
    assert journal_events(out)[-1] == ("skipped", str(tmp_path / "site1" / "rec.wav"))
    assert predict.main(argv(model, tmp_path / "site2" / "rec.wav", out, "--overwrite")) == 0   # asked for
    assert first_line(out / "rec_predict_output.log") == str(tmp_path / "site2" / "rec.wav")


def test_a_recording_replaced_in_place_is_not_taken_for_the_old_one(model, tmp_path, capsys):
    season = tmp_path / "season"
    make_recording(str(season / "rec.wav"), 2.0, 16000, [("upsweep", 0.5)], seed=1)
    out = tmp_path / "out"
    assert predict.main(argv(model, season, out)) == 0
    make_recording(str(season / "rec.wav"), 2.0, 16000, [("downsweep", 1.0)], seed=7)   # the next day's file
    assert predict.main(argv(model, season, out)) == 1
    assert "another recording of the same name" in said(capsys)
    assert [e for e, _ in journal_events(out)] == ["done"]


def test_an_embedding_store_refuses_a_recording_of_another_site_with_a_stored_name(model, tmp_path, capsys):
    for site, seed in (("site1", 1), ("site2", 2)):
        make_recording(str(tmp_path / site / "rec.wav"), 2.0, 16000, [("upsweep", 0.5)], seed=seed)
    flags = ["--model_path", model, "--store", str(tmp_path / "store"), "--hop", "0.5", "--memory_format",
             "contiguous"]
    assert embed.main(flags + ["--input_file", str(tmp_path / "site1")]) == 0
    assert embed.main(flags + ["--input_file", str(tmp_path / "site2")]) == 1
    message = said(capsys)
    assert "site2/rec.wav" in message and "site1/rec.wav" in message and "--store" in message
    assert embed.main(flags + ["--input_file", str(tmp_path / "site1")]) == 0       # itself: found, not redone


def stereo(path, seconds, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.05 * rng.standard_normal((int(seconds * 16000), 2)), 16000)


def test_channel_logs_never_meet_another_recordings_name(model, tmp_path, capsys):
    season = tmp_path / "season"
    stereo(season / "rec.wav", 1.0, 1)
    make_recording(str(season / "rec_ch1.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=2)     # mono, named so
    out = tmp_path / "out"
    assert predict.main(argv(model, season, out, "--channels", "each")) == 1
    message = said(capsys)
    assert "same name" in message and "rec.wav (channel 1)" in message
    assert not out.exists() or not list(out.glob("*.log"))                                  # nothing written
    assert predict.main(argv(model, season, out)) == 0          # without --channels each the names are apart
    stereo(season / "rec.wav", 1.0, 1)
    (season / "rec_ch1.wav").rename(season / "rec_ch3.wav")     # channel 3 of a 2-channel file: no clash
    assert predict.main(argv(model, season, tmp_path / "out2", "--channels", "each")) == 0


def test_without_a_run_file_mono_tapes_named_ch1_ch2_are_two_recordings(model, tmp_path):
    season = tmp_path / "season"
    for channel in (1, 2):
        make_recording(str(season / f"tape_ch{channel}.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=channel)
    out = tmp_path / "out"
    assert predict.main(argv(model, season, out)) == 0
    (out / "predict_run.json").unlink()                         # as the original leaves a folder
    found = PredictionFolder(str(out)).outputs()
    assert sorted(found) == ["tape_ch1", "tape_ch2"] and all(list(o.logs) == [None] for o in found.values())
    assert PredictionFolder(str(out)).find("tape") is None


def test_overwrite_leaves_exactly_this_runs_recordings_and_a_rerun_says_which_it_keeps(model, tmp_path, capsys):
    season = tmp_path / "season"
    for i, name in enumerate("abc"):
        make_recording(str(season / f"{name}.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=i)
    out = tmp_path / "out"
    assert predict.main(argv(model, season, out, "--format", "csv")) == 0
    (season / "c.wav").unlink()
    capsys.readouterr()
    assert predict.main(argv(model, season, out, "--format", "csv")) == 0                  # kept, and said
    message = said(capsys)
    assert "keeps the outputs of 1 recording" in message and "c.wav" in message
    assert sorted(PredictionFolder(str(out)).outputs()) == ["a", "b", "c"]
    assert "recordings: 3 done" in "\n".join(report_lines(str(out))[0])
    assert "\tc.wav\t" in (out / "combined.Table.1.selections.txt").read_text()
    assert predict.main(argv(model, season, out, "--format", "csv", "--overwrite")) == 0
    assert sorted(p.name for p in out.glob("c[._]*")) == []                                # its files removed
    assert "\tc.wav\t" not in (out / "combined.Table.1.selections.txt").read_text()
    assert sorted(PredictionFolder(str(out)).outputs()) == ["a", "b"]
    lines = "\n".join(report_lines(str(out))[0])
    assert "recordings: 2 done, 0 failed, 0 missing" in lines
    assert json.loads((out / "predict_run.json").read_text())["recordings"] == [str(season / "a.wav"), str(season / "b.wav")]
    (out / "c_predict_output.log").write_text((out / "a_predict_output.log").read_text())   # a stray log
    assert sorted(PredictionFolder(str(out)).outputs()) == ["a", "b"]                     # not a recording of it


@pytest.mark.parametrize("name", ["rec\nnext.wav", "rec\tx.wav", "rec\x1b.wav"])
def test_a_recording_name_no_table_can_hold_is_refused_before_anything_is_written(model, tmp_path, capsys, name):
    season = tmp_path / "season"
    make_recording(str(season / "good.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=1)
    make_recording(str(season / name), 1.0, 16000, [("upsweep", 0.3)], seed=2)
    out = tmp_path / "out"
    assert predict.main(argv(model, season, out)) == 1
    assert "control character" in said(capsys) and not out.exists()
    store = tmp_path / "store"
    assert embed.main(["--model_path", model, "--input_file", str(season), "--store", str(store)]) == 1
    assert not (store / "parts").exists() or not list((store / "parts").iterdir())


def test_the_run_file_record_reads_what_older_versions_wrote(tmp_path):
    from prediction.records import RunFile

    older = {"input_file": "in", "recordings": ["in/a.wav"], "threshold": 0.5, "thresholds": None,
             "temperature": 1.0, "post": {"merge_gap": 0.0, "min_duration": 0.0, "smooth": 1, "smooth_method": "median"},
             "channels": "mean", "timestamp_format": None, "classes": {"noise": 0, "target": 1}, "data_opts": {},
             "raven": True, "models": ["m.pk"], "detector": None, "detector_threshold": None}
    (tmp_path / "predict_run.json").write_text(json.dumps(older))
    run = RunFile.read(str(tmp_path))
    assert run.output_names() is None and run.rule.threshold == 0.5 and run.class_map.is_binary
    assert "hop" not in run.present and "hop" not in run.changes(run)
    (tmp_path / "predict_run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="predict_run.json: not a run file"):
        RunFile.read(str(tmp_path))


def test_the_same_season_named_another_way_is_the_same_run(model, tmp_path, monkeypatch, capsys):
    season = tmp_path / "season"
    for i, name in enumerate("ab"):
        make_recording(str(season / f"{name}.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=i)
    monkeypatch.chdir(tmp_path)
    assert predict.main(argv(model, "season", "out")) == 0
    table = (tmp_path / "out" / "combined.Table.1.selections.txt").read_text()
    other = tmp_path / "elsewhere"
    other.mkdir()
    for given, where in (("./season", tmp_path), (str(season), other), (str(season) + "/", other)):
        monkeypatch.chdir(where)
        capsys.readouterr()
        assert predict.main(argv(model, given, tmp_path / "out")) == 0
        said_now = said(capsys)
        assert "keeps the outputs" not in said_now and "skipped" in said_now
        assert [e for e, _ in journal_events(tmp_path / "out")][-2:] == ["skipped", "skipped"]
        assert len(json.loads((tmp_path / "out" / "predict_run.json").read_text())["recordings"]) == 2
        assert (tmp_path / "out" / "combined.Table.1.selections.txt").read_text() == table


def test_reruns_keep_what_has_outputs_and_follow_the_advice_to_a_clean_folder(model, tmp_path, capsys):
    season = tmp_path / "season"
    make_recording(str(season / "site1" / "rec.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=1)
    (season / "site1" / "broken.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "out"
    assert predict.main(argv(model, season / "site1", out)) == 1                  # broken.wav fails
    (season / "site1" / "broken.wav").unlink()
    capsys.readouterr()
    assert predict.main(argv(model, season / "site1", out)) == 0
    assert "keeps the outputs" not in said(capsys)                                # it had none to keep
    make_recording(str(season / "site2" / "rec.wav"), 1.0, 16000, [("downsweep", 0.3)], seed=2)
    assert predict.main(argv(model, season, out)) == 1                           # another input: refused
    assert predict.main(argv(model, season, out, "--overwrite")) == 0
    assert sorted(PredictionFolder(str(out)).outputs()) == ["site1/rec", "site2/rec"]
    assert not list(out.glob("rec*")) and not list(out.glob("broken*"))           # nothing orphaned at the top


def test_two_mono_files_named_rec_and_rec_ch1_are_no_clash(model, tmp_path):
    season = tmp_path / "season"
    for name in ("rec", "rec_ch1"):
        make_recording(str(season / f"{name}.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=3)
    assert predict.main(argv(model, season, tmp_path / "out", "--channels", "each")) == 0
    assert sorted(PredictionFolder(str(tmp_path / "out")).outputs()) == ["rec", "rec_ch1"]


def test_a_tag_added_to_a_recording_later_keeps_it_the_same_recording(model, tmp_path):
    season = tmp_path / "season"
    make_recording(str(season / "rec.wav"), 1.0, 16000, [("upsweep", 0.3)], seed=1)
    assert predict.main(argv(model, season, tmp_path / "out")) == 0
    with open(season / "rec.wav", "ab") as handle:                 # a LIST chunk appended by a tagging tool
        handle.write(b"LIST\x0c\x00\x00\x00INFOICMT\x00\x00\x00\x00")
    assert predict.main(argv(model, season, tmp_path / "out")) == 0
    assert [e for e, _ in journal_events(tmp_path / "out")] == ["done", "skipped"]
