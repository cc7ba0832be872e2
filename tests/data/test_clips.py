"""``animal-spot clips``: data as users keep it (one folder per class, a label table, Raven
tables) becomes clips with ANIMAL-SPOT names, nothing changed in place, the tape split
keeping each recording's clips together."""

import random
import time

import numpy as np
import pytest
import soundfile as sf

import clips
import commands
from data.clips import year_and_tape
from data.filenames import class_name, find_audio_files, tape_key, usable_files
from data.split import create_split


def tone(path, seconds, rate=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)), rate)


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_folder_per_class_becomes_clips_with_tapes_of_their_recordings(tmp_path):
    source = tmp_path / "birdnet_data"
    for cls, sub in (("Killer whale", "siteA"), ("Killer whale", "siteB"), ("noise", None)):
        for i in range(3):
            tone(source / cls / (sub or "") / f"clip{i}.wav", 0.5, seed=i)
    before = listing(source)
    out = tmp_path / "data"
    assert commands.main(["clips", "--folders", str(source), "--out", str(out), "--year", "2024"]) == 0
    assert listing(source) == before                                            # nothing changed in place
    files = find_audio_files(str(out))
    assert len(files) == 9 and usable_files(files) == files                     # ANIMAL-SPOT names, all usable
    assert {class_name(f) for f in files} == {"Killerwhale", "noise"}
    tapes = {f: tape_key(f) for f in files}
    assert len({t for f, t in tapes.items() if "SITEA" in t.upper()}) == 1               # a sub-folder is one tape
    assert len({t for f, t in tapes.items() if class_name(f) == "noise"}) == 3   # else each file its own
    split = create_split(str(out), files, random.Random(0))                     # the tape split holds
    for partition in split.values():
        for other in split.values():
            if other is not partition:
                assert not {tape_key(f) for f in partition} & {tape_key(f) for f in other}
    assert commands.main(["clips", "--folders", str(source), "--out", str(source / "inside")]) == 1


@pytest.mark.parametrize("one_hot", [False, True])
def test_a_label_table_is_cut_from_its_recordings(tmp_path, one_hot):
    tone(tmp_path / "audio" / "site0_20240612_030500.wav", 5.0)
    tone(tmp_path / "audio" / "site1_20230101_000000.wav", 5.0, seed=1)
    if one_hot:
        table = ("file,start_time,end_time,K1,K2\nsite0_20240612_030500.wav,1.0,1.5,1,0\n"
                 "site0_20240612_030500.wav,2.0,2.25,0,1\nsite1_20230101_000000.wav,0.5,1.0,0,0\n")
    else:
        table = ("file,start,end,label\nsite0_20240612_030500.wav,1.0,1.5,K1\n"
                 "site0_20240612_030500.wav,2.0,2.25,K2\nsite1_20230101_000000.wav,0.5,1.0,noise\n")
    (tmp_path / "labels.csv").write_text(table)
    out = tmp_path / "data"
    assert clips.main(["--table", str(tmp_path / "labels.csv"), "--audio", str(tmp_path / "audio"), "--out",
                       str(out)]) == 0
    files = find_audio_files(str(out))
    assert sorted(class_name(f) for f in files) == ["K1", "K2", "noise"]
    k1 = next(f for f in files if class_name(f) == "K1")
    assert tape_key(k1).upper() == "2024_SITE020240612030500" and k1.endswith("_1000_1500.wav")
    assert sf.info(str(out / k1)).frames == 8000
    (tmp_path / "bad.csv").write_text("file,start,end,K1,K2\nsite0_20240612_030500.wav,1.0,1.5,1,1\n")
    assert clips.main(["--table", str(tmp_path / "bad.csv"), "--audio", str(tmp_path / "audio"), "--out",
                       str(tmp_path / "bad")]) == 1                            # two labels for one clip: named


def test_the_year_comes_from_a_date_in_the_recordings_name(tmp_path):
    tone(tmp_path / "site0_20240612_030500.wav", 0.1)
    assert year_and_tape(str(tmp_path / "site0_20240612_030500.wav")) == ("2024", "site020240612030500")
    tone(tmp_path / "rec_2019_T07.wav", 0.1)
    assert year_and_tape(str(tmp_path / "rec_2019_T07.wav")) == ("2019", "T07")          # ANIMAL-SPOT's pair first
    tone(tmp_path / "5216.2023-11-02.wav", 0.1)
    assert year_and_tape(str(tmp_path / "5216.2023-11-02.wav"))[0] == "2023"


def test_clips_added_to_a_split_again_are_listed_once(tmp_path, capsys):
    from data.split import load_split
    source = tmp_path / "source"
    for i in range(4):
        tone(source / "K1" / f"clip{i}.wav", 0.5, seed=i)
        tone(source / "noise" / f"clip{i}.wav", 0.5, seed=10 + i)
    out = tmp_path / "data"
    assert commands.main(["clips", "--folders", str(source), "--out", str(out), "--year", "2024"]) == 0
    create_split(str(out), find_audio_files(str(out)), random.Random(1))
    before = load_split(str(out))
    argv = ["clips", "--folders", str(source), "--out", str(out), "--year", "2024", "--into_partition", "train"]
    capsys.readouterr()
    assert commands.main(argv) == 0                                   # the same clips again: nothing to add
    assert load_split(str(out)) == before
    said = "".join(capsys.readouterr())
    assert "0 clip(s) added to the train partition" in said and "(8 listed there already)" in said
    time.sleep(1.1)                        # another second: libsndfile stamps it into float files (their PEAK chunk)
    tone(source / "K1" / "clip9.wav", 0.5, seed=9)                     # one new recording
    assert commands.main(argv) == 0
    after = load_split(str(out))
    new = [f for f in after["train"] if f not in before["train"]]
    assert len(new) == 1 and after["val"] == before["val"] and after["test"] == before["test"]
    assert sorted(sum(after.values(), [])) == sorted(find_audio_files(str(out)))    # each clip listed once
