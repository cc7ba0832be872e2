import logging
import os
import random

import pytest

from data.filenames import filter_broken_audio, find_audio_files, tape_key
from data.split import PARTITIONS, create_split, get_split, load_split, missing_partitions, report_split
from utils.synthetic import make_call_set, write_clip


def _tapes(files):
    return {tape_key(f) for f in files}


def test_split_keeps_tapes_whole_and_is_reused(call_set):
    files = find_audio_files(str(call_set))
    split = get_split(str(call_set), files, random.Random(3))
    assert sorted(sum(split.values(), [])) == sorted(files)           # nothing lost or doubled
    for a in PARTITIONS:
        for b in PARTITIONS:
            if a < b:
                assert not _tapes(split[a]) & _tapes(split[b])
    index_before = {p: (call_set / p).read_text() for p in PARTITIONS}
    again = get_split(str(call_set), files, random.Random(99))      # another seed: reused anyway
    assert again == split
    assert {p: (call_set / p).read_text() for p in PARTITIONS} == index_before


def test_index_files_are_rewritten_not_appended(call_set):
    files = find_audio_files(str(call_set))
    create_split(str(call_set), files, random.Random(1))
    create_split(str(call_set), files, random.Random(2))
    loaded = load_split(str(call_set))
    every = sum(loaded.values(), [])
    assert len(every) == len(set(every)) == len(files)


def test_relative_data_dir_works(call_set, monkeypatch):
    monkeypatch.chdir(call_set.parent)
    files = find_audio_files("data")
    split = create_split("data", files, random.Random(0))
    assert sum(len(v) for v in split.values()) == len(files)
    assert load_split("data") == split


def test_one_tape_in_two_folders_stays_in_one_partition(tmp_path):
    for folder in ("calls", "noise"):
        for tape in range(6):
            for i in range(2):
                name = "target" if folder == "calls" else "noise"
                write_clip(str(tmp_path / folder / f"{name}-x_{i}_2019_TAPE{tape}_0_1.wav"), [0.1] * 400, 16000)
    split = create_split(str(tmp_path), find_audio_files(str(tmp_path)), random.Random(5))
    seen = {}
    for partition, files in split.items():
        for f in files:
            assert seen.setdefault(tape_key(f), partition) == partition


def test_empty_partition_is_kept_and_reported(tmp_path, caplog):
    make_call_set(str(tmp_path), {"K1": 20, "K2": 20, "rare": 1}, tapes_per_class=10, sr=8000, duration=0.1)
    files = find_audio_files(str(tmp_path))
    split = create_split(str(tmp_path), files, random.Random(0))
    assert all(split[p] for p in PARTITIONS)
    assert all(os.path.isfile(tmp_path / p) for p in PARTITIONS)     # reused next run
    missing = missing_partitions(split, ["K1", "K2", "rare"])
    assert len(missing["rare"]) == 2
    with caplog.at_level(logging.WARNING, logger="ANIMAL-SPOT"):
        report_split(split, ["K1", "K2", "rare"])
    assert "Class rare has no files in partition(s)" in caplog.text


def test_missing_csv_aborts(call_set):
    files = find_audio_files(str(call_set))
    create_split(str(call_set), files, random.Random(0))
    first = (call_set / "train").read_text().split()[0]
    os.remove(call_set / first)
    with pytest.raises(ValueError, match="csv files are missing"):
        load_split(str(call_set))


def test_broken_audio_moved_aside_and_not_used_again(tmp_path):
    write_clip(str(tmp_path / "a" / "target-x_1_2019_T_1_2.wav"), [0.0] * 800, 8000)
    write_clip(str(tmp_path / "a" / "target-x_2_2019_T_1_2.wav"), [-0.5] * 800, 8000)   # negative only: not silent
    write_clip(str(tmp_path / "a" / "noise-x_3_2019_T_1_2.wav"), [0.3, -0.3] * 400, 8000)
    moved = filter_broken_audio(str(tmp_path), find_audio_files(str(tmp_path)))
    assert moved == [os.path.join("a", "target-x_1_2019_T_1_2.wav")]
    assert (tmp_path / "a" / "bkp" / "target-x_1_2019_T_1_2.wav").exists()
    assert len(find_audio_files(str(tmp_path))) == 2


def test_a_whole_empty_partition_is_an_error():
    with pytest.raises(ValueError, match="partition.*val.*no file"):
        report_split({"train": ["K1-x_1_2019_A_1_2.wav"], "val": [], "test": ["K1-x_1_2019_B_1_2.wav"]}, ["K1"])
