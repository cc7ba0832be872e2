import logging
import os

import pytest

from data.filenames import (FileNameError, class_name, discover_classes, find_audio_files, tape_key,
                            tape_problem, usable_files)
from utils.classmap import ClassMap, check_class_count


def class_index_map(names, num_classes):
    check_class_count(names, num_classes)
    return ClassMap.from_names(names).to_dict()


@pytest.mark.parametrize("path, expected", [
    ("target-x_1_2019_T7_10_20.wav", "target"),
    ("sub/dir-with-dash/noise-_2381_2010_101BC_149817_150055.wav", "noise"),
    ("call-Orca-A12_929_2019_Rec-031-2018-10-19_1_2.wav", "call"),
    ("K_1-info_1_2019_T_1_2.wav", "K_1"),
])
def test_class_name(path, expected):
    assert class_name(path) == expected


def test_class_name_without_dash_names_the_file_and_rule():
    with pytest.raises(FileNameError, match=r"bad_1_2019_T_1_2\.wav.*'-'"):
        class_name("sub/bad_1_2019_T_1_2.wav")


@pytest.mark.parametrize("path, key", [
    ("sub/target-x_1_2019_t7_10_20.wav", "2019_T7"),
    ("a_b/c_d/target-x_1_2019_T7_10_20.wav", "2019_T7"),
    ("target-x__1_2019_tape_10_20.wav", "2019_TAPE"),       # '__' collapses harmlessly
    ("target-x_1_2019__10_20.wav", None),                    # empty field shifts YEAR
    ("target-x_1_19x9_T_10_20.wav", None),                   # YEAR not an integer
    ("target-x_1_1949_T_10_20.wav", None),                   # YEAR out of range
    ("target-x_1_2200_T_10_20.wav", None),
    ("target-x_1_2199_T_10_20.wav", "2199_T"),
    ("target-x_10_20.wav", None),                            # too few fields
])
def test_tape_key(path, key):
    assert tape_key(path) == key
    assert (tape_problem(path) is None) == (key is not None)


def test_skipped_files_are_reported_with_a_count(caplog):
    with caplog.at_level(logging.WARNING, logger="ANIMAL-SPOT"):
        kept = usable_files(["a-x_1_2019_T_1_2.wav", "a-x_1_1800_T_1_2.wav", "b-x_1.wav"])
    assert kept == ["a-x_1_2019_T_1_2.wav"]
    assert "a-x_1_1800_T_1_2.wav" in caplog.text and "b-x_1.wav" in caplog.text
    assert "Skipped 2 file(s)" in caplog.text


def test_discovery_skips_backup_and_hidden_folders(tmp_path):
    for rel in ["a/x-1_1_2019_T_1_2.wav", "a/bkp/x-2_1_2019_T_1_2.wav", "a/old.bkp/x-3_1_2019_T_1_2.wav",
                ".hidden/x-4_1_2019_T_1_2.wav", "y-5_1_2019_T_1_2.wav", "a/readme.txt", "a/x-6_1_2019_T_1_2.WAV"]:
        os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert find_audio_files(str(tmp_path)) == [os.path.join("a", "x-1_1_2019_T_1_2.wav"),
                                               os.path.join("a", "x-6_1_2019_T_1_2.WAV"),   # upper case counts
                                               "y-5_1_2019_T_1_2.wav"]


def test_class_maps():
    assert class_index_map(discover_classes(["target-a_1_2019_T_1_2.wav", "noise-_1_2019_T_1_2.wav"]), 2) == \
        {"noise": 0, "target": 1}
    assert class_index_map(["K1", "K2", "noise"], 3) == {"K1": 0, "K2": 1, "noise": 2}
    # code-point order: upper case before lower case
    assert discover_classes(["b-x", "B-x", "a-x"]) == ["B", "a", "b"]


def test_num_classes_mismatch_lists_the_classes():
    with pytest.raises(ValueError, match="K1, K2, noise"):
        class_index_map(["K1", "K2", "noise"], 2)
    with pytest.raises(ValueError, match="not a valid number"):
        class_index_map(["K1"], 1)


def test_binary_without_target_is_an_error():
    with pytest.raises(ValueError, match="target"):
        class_index_map(["call", "noise"], 2)


def test_class_map_is_the_one_place_for_binary_and_names():
    binary = ClassMap.from_names(["noise", "target"])
    assert binary.is_binary and binary.names == ["noise", "target"] and binary.noise_index == 0
    multi = ClassMap.from_dict({"K1": 0, "K14": 1, "Noise": 2})
    assert not multi.is_binary and multi.name_of(1) == "K14" and multi.index("Noise") == 2
    assert multi.noise_index == 2                                   # any case
    with pytest.raises(KeyError, match="K9"):
        multi.index("K9")
    assert "only in the second: K2" in multi.describe_difference(ClassMap.from_names(["K1", "K14", "K2", "Noise"]))
