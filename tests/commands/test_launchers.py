import os
import sys

import pytest

from utils.config import ConfigError, build_command, read_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_config_turns_into_the_expected_command(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text(
        "#comment\n"
        "src_dir=/*USER-SPECIFIC-DIRECTORY*/\n"
        "debug=true\n"
        "data_dir=\"/data/my corpus\"\n"
        "num_workers=0 # 8\n"          # the original's shell cut the command here (issue #12)
        "n_fft=1024\n"
        "  hop_length=172\r\n"          # indented / CRLF lines count
        "\r\n"
        "jit_save=false\n"
        "augmentation=True\n"
        "backbone=convnext\n"
        "pretrained=true\n"
        "n_fft=2048\n")                 # later duplicate wins
    config = read_config(str(cfg))
    command = build_command(config, "main.py", os.path.join(ROOT, "TRAINING", "start_training.py"))
    assert command[:4] == [sys.executable, "-W", "ignore::UserWarning", os.path.join(ROOT, "ANIMAL-SPOT", "main.py")]
    assert command[4:] == ["--debug", "--data_dir", "/data/my corpus", "--num_workers", "0", "--n_fft", "2048",
                           "--hop_length", "172", "--augmentation", "--backbone", "convnext", "--pretrained"]


def test_config_values_reach_the_parser(tmp_path):
    import main as train_main
    cfg = tmp_path / "config"
    cfg.write_text("n_fft=1024 # not 4096\nhop_length=172\nsequence_len=500\nbackbone=convnext\nmin_max_norm=true\n")
    argv = build_command(read_config(str(cfg)), "main.py", os.path.join(ROOT, "TRAINING", "x.py"))[4:]
    args = train_main.build_parser().parse_args(argv)
    assert (args.n_fft, args.hop_length, args.sequence_len, args.backbone, args.min_max_norm) == \
        (1024, 172, 500, "convnext", True)


def test_line_without_equals_names_file_and_line(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("debug=true\nbroken line\n")
    with pytest.raises(ConfigError, match=r"config:2"):
        read_config(str(cfg))


def test_shipped_templates_parse():
    for folder in ("TRAINING", "PREDICTION", "EVALUATION"):
        assert read_config(os.path.join(ROOT, folder, "config"))


@pytest.mark.parametrize("launcher", ["TRAINING/start_training.py", "PREDICTION/start_prediction.py"])
def test_an_unedited_template_is_refused_before_anything_is_written(launcher, tmp_path):
    import subprocess

    template = os.path.join(ROOT, os.path.dirname(launcher), "config")
    placeholder = "/*USER-SPECIFIC-DIRECTORY*"
    existed = os.path.exists(placeholder)
    result = subprocess.run([sys.executable, os.path.join(ROOT, launcher), template], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "replace the placeholders of" in result.stderr and "noise_dir" not in result.stderr.split("placeholders of")[1]
    assert "Traceback" not in result.stderr and os.path.exists(placeholder) == existed and not list(tmp_path.iterdir())
