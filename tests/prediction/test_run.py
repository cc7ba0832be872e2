"""The one prediction run and its folder contract: every output a recording gets stays
below --output_dir whatever its name, every table format reads back what it wrote, and a
prediction folder is read by one rule (the log wins)."""

import dataclasses
import json
import os

import pytest

from evaluation.raven import Event
from prediction.decisions import DecisionRule, PostProcessing
from prediction.folder import PredictionFolder, prepare_folder
from prediction.records import RUN_FILE, RunFile
from prediction.run import Decisions, Layout, Opened, run_recordings
from prediction.season import SeasonJournal, read_journals
from prediction.sinks import LogSink, Recording, RunInfo
from prediction.tables import FORMATS, RavenSink
from utils.classmap import ClassMap
from utils.paths import OutsideError

CLASSES = ClassMap.from_dict({"K1": 0, "K2": 1, "noise": 2})


def test_a_name_that_leads_outside_the_output_folder_is_refused_and_journalled(tmp_path):
    out = tmp_path / "out"
    layout = Layout("s3://bucket/season", str(out))
    assert layout.recording("s3://bucket/season/site1/rec.wav").folder == os.path.join(str(out), "site1")
    with pytest.raises(OutsideError, match="leads outside"):
        layout.recording("s3://bucket/season/../../../../tmp/evil.wav")     # an object key with '..'
    (tmp_path / "elsewhere").mkdir()
    (out / "site2").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "elsewhere", out / "site2")                       # a link out of the folder
    with pytest.raises(OutsideError):
        layout.recording("s3://bucket/season/site2/rec.wav")

    class Source:
        def open(self, path):
            return Opened(1.0, 16000, 16000, 16000, 1, 1, 16000, [])
    journal = SeasonJournal(str(out), "all")
    failed = run_recordings(["s3://bucket/season/../../x/evil.wav"], Source(), layout, [LogSink(None)],
                            Decisions(DecisionRule(), CLASSES), journal)
    assert failed == ["s3://bucket/season/../../x/evil.wav"]
    entry = [e for e in read_journals(str(out))[0] if e["event"] == "failed"][0]
    assert "leads outside" in entry["reason"]
    assert not (tmp_path / "x").exists() and not list((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("name", ["raven"] + sorted(FORMATS))
def test_every_table_format_reads_back_what_it_wrote(tmp_path, name):
    info = RunInfo(["m.pk"], CLASSES, {"fmin": 0, "fmax": 8000}, 0.5, 0.25, DecisionRule(0.5), PostProcessing(),
                   output_dir=str(tmp_path))
    recording = Recording("in/5216.240612031500.wav", "5216.240612031500.wav", "5216.240612031500", str(tmp_path),
                          10.0, channels=2)
    events = [Event(recording.stem, 0.5, 1.25, "K1", 0.91234, 1), Event(recording.stem, 2.0, 2.5, "K2", 0.75, 2),
              Event(recording.stem, 3.0, 3.5, "noise", 0.99, 1)]
    sink = RavenSink(info) if name == "raven" else FORMATS[name](info)
    sink.end(recording, events)
    (path,) = sink.outputs(recording)
    back = type(sink).read(path)
    expected = [(e.recording, e.begin, e.end, e.label, e.channel) for e in events if e.label != "noise"]
    assert [(e.recording, e.begin, e.end, e.label, e.channel) for e in back] == expected
    if name != "audacity":                                                  # Audacity's track has no score
        assert [round(e.score, 4) for e in back] == [0.9123, 0.75]


LOG = ("12:00:00|I|rec.wav\n12:00:00|I|Model Path: m.pk\n12:00:00|I|dataOpts: {'sr': 16000, 'fmin': 0, 'fmax': 8000}\n"
       "12:00:00|I|prediction length: 0.3[s], hop length: 0.1[s], threshold: {threshold}, prediction fmin: 0[Hz] "
       "prediction fmax: 8000[Hz]\n12:00:00|I|class distribution: {{'noise': 0, 'target': 1}}\n")


def write_log(path, probs, threshold=0.5):
    text = LOG.replace("{threshold}", str(threshold)).replace("{{", "{").replace("}}", "}")
    text += "".join(f"12:00:01|I|time={round(i / 10, 3)}-{round(i / 10 + 0.3, 3)}, pred={int(p >= threshold)}, "
                    f"prob={p}\n" for i, p in enumerate(probs))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_prediction_folder_is_read_by_one_rule(tmp_path):
    folder = tmp_path / "pred"
    write_log(folder / "site1" / "a_predict_output.log", [0.1, 0.7, 0.95, 0.1], threshold=0.9)   # the original's
    (folder / "site1" / "a.Table.1.selections.txt").write_text(
        "Selection\tBegin Time (s)\tEnd Time (s)\tSound type\n1\t5.0\t6.0\ttarget\n")           # a log beside it wins
    (folder / "site1" / "5216.240612031500.Table.1.selections.txt").write_text(
        "Selection\tBegin Time (s)\tEnd Time (s)\tLabel\n1\t1.0\t2.0\ttarget\n")                # a table alone
    for channel in (1, 2):
        write_log(folder / f"b_ch{channel}_predict_output.log", [0.1, 0.6 * channel, 0.1])       # --channels each
    write_log(folder / "c_ch2_predict_output.log", [0.7, 0.1])                                   # named so, mono
    found, combined = PredictionFolder(str(folder)).scan()
    assert sorted(found) == ["b", "c_ch2", "site1/5216.240612031500", "site1/a"] and combined == []
    assert found["site1/a"].source == "log" and found["site1/5216.240612031500"].source == "table"
    assert sorted(found["b"].logs) == [1, 2] and list(found["c_ch2"].logs) == [None]
    reader = PredictionFolder(str(folder))
    events = {key: [(e.begin, e.end, e.label, e.channel) for e in reader.events(outputs)]
              for key, outputs in found.items()}
    assert events["site1/a"] == [(0.2, 0.5, "target", 1)]           # decided as its header's threshold 0.9 says
    assert events["site1/5216.240612031500"] == [(1.0, 2.0, "target", 1)]
    assert events["b"] == [(0.1, 0.4, "target", 1), (0.1, 0.4, "target", 2)]
    assert events["c_ch2"] == [(0.0, 0.3, "target", 1)]
    for key, outputs in found.items():                              # a recording looked up by name: the same
        assert reader.find(key).logs == outputs.logs or key == "site1/5216.240612031500"


def test_logs_of_an_earlier_run_with_other_channels_are_not_mixed_in(tmp_path):
    folder = tmp_path / "pred"
    for channel in (1, 2):                                          # an earlier --channels each run
        write_log(folder / f"rec_ch{channel}_predict_output.log", [0.9, 0.9, 0.9])
    write_log(folder / "rec_predict_output.log", [0.1, 0.7, 0.1])   # this --channels mean run
    write_log(folder / "tape_ch1_predict_output.log", [0.7, 0.1])   # a recording of this run named so
    run = RunFile(recordings=("in/rec.wav", "in/tape_ch1.wav"))
    dataclasses.replace(run, channels="mean").write(str(folder))
    reader = PredictionFolder(str(folder))
    found = reader.outputs()
    assert sorted(found) == ["rec", "tape_ch1"] and list(found["rec"].logs) == [None]
    assert reader.find("rec").logs == found["rec"].logs
    assert [(e.begin, e.channel) for e in reader.events(found["rec"])] == [(0.1, 1)]

    (folder / "rec_predict_output.log").unlink()                    # rec failed in this run: its old logs
    assert sorted(PredictionFolder(str(folder)).outputs()) == ["tape_ch1"]     # are not recordings of it

    dataclasses.replace(run, channels="each").write(str(folder))   # now the each run is the newer one
    reader = PredictionFolder(str(folder))
    found = reader.outputs()
    assert sorted(found) == ["rec", "tape_ch1"] and sorted(found["rec"].logs) == [1, 2]
    assert list(found["tape_ch1"].logs) == [None]                   # mono under --channels each: one log
    for key in found:
        assert reader.find(key).logs == found[key].logs
    assert reader.find("tape") is None


def test_with_no_run_file_a_channel_set_has_two_logs_at_least(tmp_path):
    folder = tmp_path / "pred"
    for name in ("rec", "rec_ch1", "tape_ch1"):                     # three mono recordings
        write_log(folder / f"{name}_predict_output.log", [0.1, 0.7])
    reader = PredictionFolder(str(folder))
    found = reader.outputs()
    assert sorted(found) == ["rec", "rec_ch1", "tape_ch1"] and all(list(o.logs) == [None] for o in found.values())
    assert all(reader.find(key).logs == outputs.logs for key, outputs in found.items())


def test_a_rerun_is_refused_only_where_a_decision_setting_changed(tmp_path, monkeypatch):
    import logging

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pk").write_bytes(b"model")
    log = logging.getLogger("test")
    run = RunFile(input_file="in", recordings=("in/a.wav",), outputs=("a",), models=("m.pk",), hop=0.1)
    (tmp_path / RUN_FILE).write_text(json.dumps({"threshold": 0.5, "models": ["m.pk"]}))   # an older file: fewer keys
    prepare_folder(str(tmp_path), run, False, log)
    assert RunFile.read(str(tmp_path)) == run
    prepare_folder(str(tmp_path), dataclasses.replace(run, models=("./m.pk",), input_file="./in/"), False, log)
    for changed in ({"detector": "d.pk"}, {"hop": 0.2}, {"models": ("other.pk",)}, {"threshold": 0.6},
                    {"input_file": "site2"}):
        with pytest.raises(ValueError, match="other settings \\(" + list(changed)[0]):
            prepare_folder(str(tmp_path), dataclasses.replace(run, **changed), False, log)
        prepare_folder(str(tmp_path), run, False, log)
    assert RunFile.from_dict(json.loads(json.dumps(run.to_dict()))) == run     # the record round-trips


def test_a_failed_recording_leaves_the_latent_file_and_only_its_own_windows(tmp_path):
    from prediction.sinks import LatentSink

    sink = LatentSink(str(tmp_path))
    a, b = (Recording(f"{n}.wav", f"{n}.wav", n, str(tmp_path), 1.0) for n in "ab")
    sink.start(a)
    for values in sink.latent.values():
        values.append("a window")
    sink.end(a, [])
    sink.discard(b)                                                 # b failed before it started
    assert sink.latent["filenames"] == ["a window"]
    sink.start(b)
    for values in sink.latent.values():
        values.append("b window")
    sink.discard(b)                                                 # b failed midway
    assert all(values == ["a window"] for values in sink.latent.values())


def test_recordings_whose_outputs_would_share_a_name_are_refused(tmp_path):
    layout = Layout(str(tmp_path / "list.txt"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="same name.*a/rec.wav and .*b/rec.wav"):
        layout.check_unique([str(tmp_path / "a" / "rec.wav"), str(tmp_path / "b" / "rec.wav")])
    layout.check_unique([str(tmp_path / "a" / "rec.wav"), str(tmp_path / "b" / "rec2.wav")])
    (tmp_path / "season" / "a").mkdir(parents=True)
    mirrored = Layout(str(tmp_path / "season"), str(tmp_path / "out"))       # a folder: sub-folders mirrored
    mirrored.check_unique([str(tmp_path / "season" / "a" / "rec.wav"), str(tmp_path / "season" / "rec.wav")])
    with pytest.raises(ValueError, match="same name"):
        mirrored.check_unique([str(tmp_path / "season" / "rec.wav"), str(tmp_path / "season" / "rec.flac")])
    mirrored.check_unique([str(tmp_path / "season" / "rec.wav"), str(tmp_path / "season" / "rec.flac")],
                          stores=True)                               # a store's parts keep the ending
    with pytest.raises(ValueError, match="same name"):
        layout.check_unique([str(tmp_path / "a" / "rec.wav"), str(tmp_path / "b" / "rec.wav")], stores=True)
