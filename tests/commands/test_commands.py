"""One command line: ``animal-spot <command>`` (installed by ``pip install -e .``, which
``make test`` does) reaches every entry point with its own flags, and a training run
repeats from its stored configuration (``--config run.json``)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import commands
import main as train_main
from conftest import small_run


def test_the_command_names_every_entry_point(capsys):
    assert commands.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ("train", "predict", "embed", "review", "export", "score", "demo"))
    assert commands.main(["tarin"]) == 2 and "unknown command 'tarin'" in capsys.readouterr().err
    assert commands.main(["train", "--list_backbones"]) == 0
    assert "birdnet" in capsys.readouterr().out


def test_the_installed_command_runs_from_anywhere(tmp_path):
    command = os.path.join(os.path.dirname(sys.executable), "animal-spot")
    assert os.path.isfile(command), "animal-spot is not installed in this environment: pip install --no-deps -e ."
    for name in ("predict", "score", "embed"):
        result = subprocess.run([command, name, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage: animal-spot " + name in result.stdout, result.stderr[-2000:]


def test_a_run_repeats_from_its_stored_configuration(call_set, tmp_path):
    first = tmp_path / "first"
    folders = {"checkpoint_dir": tmp_path / "ckpt", "log_dir": tmp_path / "logs", "summary_dir": tmp_path / "tb"}
    argv = ["--data_dir", str(call_set), "--model_dir", str(first), "--num_classes", "4", "--max_train_epochs", "1",
            "--no_progress"] + small_run(200, 5, 0) + [a for k, v in folders.items() for a in (f"--{k}", str(v))]
    assert train_main.main(argv) == 0
    stored = json.loads((first / "run.json").read_text())
    assert stored["seed"] == 5 and stored["max_train_epochs"] == 1 and stored["lr"] == 1e-4
    before = {p: p.stat().st_mtime_ns for folder in folders.values() for p in folder.rglob("*") if p.is_file()}
    again = tmp_path / "again"
    assert commands.main(["train", "--config", str(first / "run.json"), "--model_dir", str(again)]) == 0
    repeated = json.loads((again / "run.json").read_text())
    moved = ("model_dir", "config") + tuple(folders)
    assert {k: v for k, v in repeated.items() if k not in moved} == \
        {k: v for k, v in stored.items() if k not in moved}                               # every other option the same
    assert {k: repeated[k] for k in folders} == {k: str(again / n) for k, n in
                                                 (("checkpoint_dir", "checkpoints"), ("log_dir", "logs"),
                                                  ("summary_dir", "summaries"))}        # fresh, below the new folder
    assert (again / "logs" / "TRAIN.log").is_file() and list((again / "summaries").iterdir())
    assert {p: p.stat().st_mtime_ns for folder in folders.values() for p in folder.rglob("*") if p.is_file()} == \
        before                                                                           # the first run's untouched
    a, b = (torch.load(p / "ANIMAL-SPOT.pk", weights_only=True) for p in (first, again))
    assert all(torch.equal(a["encoderState"][k], b["encoderState"][k]) for k in a["encoderState"])   # the same run
    other = tmp_path / "other"                                      # a flag on top of the file counts
    assert commands.main(["train", "--config", str(first / "run.json"), "--model_dir", str(other), "--seed", "6"]) == 0
    assert json.loads((other / "run.json").read_text())["seed"] == 6
    c = torch.load(other / "ANIMAL-SPOT.pk", weights_only=True)
    assert not all(torch.equal(a["encoderState"][k], c["encoderState"][k]) for k in a["encoderState"])
    with pytest.raises(SystemExit) as stopped:                                                      # one clear error
        commands.main(["train", "--config", str(tmp_path / "missing.json")])
    assert stopped.value.code == 2
    with pytest.raises(SystemExit) as stopped:                  # a repeat needs its own --model_dir
        commands.main(["train", "--config", str(first / "run.json")])
    assert stopped.value.code == 2


@pytest.mark.parametrize("command", ["train", "predict"])
def test_the_gpu_running_out_of_memory_is_one_message(command, call_set, tmp_path, monkeypatch, capfd):
    import predict

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.6 GiB total)\n"
                                          "more detail")
    if command == "train":
        monkeypatch.setattr(train_main, "run", exhausted)
        status = train_main.main(["--data_dir", str(call_set), "--model_dir", str(tmp_path / "m")])
    else:
        monkeypatch.setattr(predict, "run", exhausted)
        status = predict.main(["--model_path", "m.pk", "--input_file", str(call_set)])
    err = capfd.readouterr().err
    assert status == 1 and "Traceback" not in err and "more detail" not in err
    assert "the GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB" in err
    assert "a smaller --batch_size" in err


def test_an_out_of_memory_error_without_text_is_one_message_too(capfd):
    from utils import cli

    def exhausted(log):
        raise torch.cuda.OutOfMemoryError("")
    assert cli.run(exhausted, "TEST") == 1
    assert "the GPU ran out of memory (CUDA out of memory)" in capfd.readouterr().err
