"""Mixed precision, memory format, torch.compile's fallback, spawn-started loader
workers, torchrun with the gloo backend, the trainer's listeners and the progress bar.
Everything here runs on the CPU; the CUDA paths share this code (bench/gpu_check.sh)."""

import os
import random
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import main as train_main
from data.filenames import find_audio_files
from data.split import create_split
from trainer import Listener, Trainer
from utils import runtime
from utils.classmap import ClassMap
from utils.synthetic import make_recording
from conftest import small_run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
SMALL = small_run(200, None, None, "--no_progress", "--backbone", "mobilenet_v3_small")


def args_for(data, out, *extra, workers="0"):
    return ["--data_dir", str(data), "--model_dir", str(out / "m"), "--log_dir", str(out / "l"),
            "--checkpoint_dir", str(out / "c"), "--summary_dir", str(out / "tb"), "--num_classes", "4",
            "--num_workers", workers] + SMALL + list(extra)


class Counting(Listener):
    """A listener that only counts the hooks it receives."""

    def __init__(self):
        self.calls = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def on_fit_start(self, trainer):
        self._count("fit_start")

    def on_pass_end(self, trainer, result):
        self._count(result.phase)

    def on_batch_end(self, trainer, batch):
        self._count("batch")


def test_the_trainer_runs_a_toy_model_with_a_null_listener():
    torch.manual_seed(0)
    x = torch.randn(24, 1, 4, 4)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    batches = [(x[i:i + 6], {"call": y[i:i + 6]}) for i in range(0, 24, 6)]
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    counting = Counting()
    trainer = Trainer(model, ClassMap.from_names(["noise", "target"]), torch.device("cpu"), nn.CrossEntropyLoss(),
                      torch.optim.SGD(model.parameters(), lr=0.5), [Listener(), counting])
    test = trainer.fit({"train": batches, "val": batches, "test": batches}, n_epochs=6, epochs_per_eval=2)
    # validation after epochs 0, 2, 4 and the last one (5); 4 batches per pass
    assert counting.calls == {"fit_start": 1, "train": 6, "val": 4, "test": 1, "batch": 4 * 11}
    assert test.accuracy > 0.9 and test.metrics.total == 24


def test_amp_without_native_bf16_says_so_and_runs_float32(tmp_path, call_set, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert train_main.main(args_for(call_set, tmp_path, "--amp", "--max_train_epochs", "1", "--seed", "1")) == 0
    err = capsys.readouterr().err
    assert err.count("no native bfloat16") == 1
    assert torch.load(tmp_path / "m" / "ANIMAL-SPOT.pk", weights_only=True)["trainOpts"]["precision"] == "float32"


def test_amp_with_native_bf16_trains_and_predicts_close_to_float32(tmp_path, call_set, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert train_main.main(args_for(call_set, tmp_path, "--amp", "--max_train_epochs", "2", "--seed", "1")) == 0
    state = torch.load(tmp_path / "m" / "ANIMAL-SPOT.pk", weights_only=True)
    assert state["trainOpts"]["precision"] == "bfloat16"
    checkpoint = torch.load(tmp_path / "c" / "multi_class_4_classifier_epoch_00001.checkpoint", weights_only=True)
    assert checkpoint["fork"]["precision"] == "bfloat16"
    recording = str(tmp_path / "rec.wav")
    make_recording(recording, 4.0, 16000, [("upsweep", 1.0), ("pulses", 2.5)], seed=4)
    from prediction.core import Predictor, PredictionModel
    from prediction.precision import Trial
    monkeypatch.setattr(Trial, "of", classmethod(lambda cls, fmt, precision: cls([(fmt, precision)])))
    path = str(tmp_path / "m" / "ANIMAL-SPOT.pk")
    full = Predictor([PredictionModel.open(path, memory_format="contiguous")], 0.2, 0.05, prefetch=False)
    half = Predictor([PredictionModel.open(path, precision=runtime.Precision(torch.bfloat16),
                                           memory_format="contiguous")], 0.2, 0.05, prefetch=False)
    p32, p16 = full.predict_file(recording)[0], half.predict_file(recording)[0]
    assert (p32 != p16).any()                                   # bfloat16 ran: its rounding shows
    assert (p32.argmax(1) == p16.argmax(1)).mean() >= 0.95      # and it decides as float32 almost everywhere


def test_memory_format_is_chosen_recorded_and_kept(tmp_path, call_set):
    # the split is made beforehand with a fixed generator: without --seed it would be drawn
    # anew, and 4 tapes per class can leave the test partition empty
    create_split(str(call_set), find_audio_files(str(call_set)), random.Random(1))
    assert train_main.main(args_for(call_set, tmp_path, "--max_train_epochs", "1")) == 0   # no --seed: timed
    log = (tmp_path / "l" / "TRAIN.log").read_text()
    chosen = re.search(r"Memory format: (contiguous|channels_last) \(contiguous [\d.]+ ms, channels_last", log).group(1)
    checkpoint = torch.load(tmp_path / "c" / "multi_class_4_classifier_epoch_00000.checkpoint", weights_only=True)
    assert checkpoint["fork"]["memoryFormat"] == chosen
    assert train_main.main(args_for(call_set, tmp_path, "--max_train_epochs", "2")) == 0
    log = (tmp_path / "l" / "TRAIN.log").read_text()
    assert "Resuming with epoch 1" in log and "Memory format:" not in log          # kept, not timed again


def test_prediction_times_the_candidates_on_real_batches_then_keeps_the_fastest(caplog):
    """Timings are given, not measured: what is checked is the order of the trial and
    the choice (the best of two per window, warm-ups not counted), and that --amp's
    reduced precision is kept only where it is faster."""
    from prediction.precision import Trial

    bf16 = runtime.Precision(torch.bfloat16)
    trial = Trial.of("auto", bf16)
    assert trial.candidates == [("contiguous", runtime.Precision()), ("channels_last", runtime.Precision()),
                                ("contiguous", bf16), ("channels_last", bf16)]
    fake = {0: [9.0, 1.6, 1.1], 1: [0.1, 1.2, 1.5], 2: [0.1, 1.4, 1.3], 3: [0.1, 2.0, 1.9]}   # s per batch of 16
    used = []
    with caplog.at_level("INFO"):
        for turn in range(3):
            for k in range(4):
                used.append(trial.current)
                trial.timed(fake[trial.candidates.index(trial.current)][turn], 16)
    assert used == trial.candidates * 3
    assert trial.chosen == ("contiguous", runtime.Precision())     # 1.1 s beats 1.2 s and bfloat16's 1.3 s
    assert "-> contiguous, float32" in caplog.text and "bfloat16 is not faster than float32 here" in caplog.text
    assert Trial.of("channels_last", runtime.Precision()).chosen == ("channels_last", runtime.Precision())


def test_compile_falls_back_cleanly(tmp_path, call_set, monkeypatch, capsys):
    def broken(model, *a, **k):
        def run(x):
            raise RuntimeError("no C++ compiler for inductor")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    assert train_main.main(args_for(call_set, tmp_path, "--compile", "--max_train_epochs", "1", "--seed", "1")) == 0
    assert "--compile: compiling failed (RuntimeError: no C++ compiler for inductor); running uncompiled" in \
        capsys.readouterr().err


def test_progress_is_quiet_when_not_a_terminal(tmp_path, call_set):
    argv = [a for a in args_for(call_set, tmp_path, "--max_train_epochs", "1", "--seed", "1") if a != "--no_progress"]
    result = subprocess.run([sys.executable, os.path.join(SRC, "main.py")] + argv, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0
    assert "\r" not in result.stderr and "batch/s" not in result.stderr and "it/s" not in result.stderr


SPAWN = "import multiprocessing\nmultiprocessing.set_start_method('spawn', force=True)\n"


def test_loader_workers_work_under_spawn(tmp_path, call_set):
    """``python ANIMAL-SPOT/main.py`` with loader workers started by spawn (macOS, Windows;
    forkserver from Python 3.14): each worker re-runs the script and must find the package.
    (predict.py's loader on the CPU is a thread: nothing to spawn there.)"""
    train = args_for(call_set, tmp_path, "--max_train_epochs", "1", "--seed", "1", "--augmentation", workers="1")
    site = tmp_path / "site"                     # every process of this run starts its workers by spawn
    site.mkdir()
    (site / "sitecustomize.py").write_text(SPAWN)
    result = subprocess.run([sys.executable, os.path.join(SRC, "main.py")] + train, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, PYTHONPATH=str(site)))      # as users run it
    assert result.returncode == 0, result.stderr[-3000:]
    assert "|train|0|" in (tmp_path / "l" / "TRAIN.log").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table_counts(log_text, phase):
    return dict(re.findall(rf"\|{phase}\|\d+\|(\S+): .*?\(n=(\d+)\)", log_text))


def test_torchrun_two_processes_count_every_sample_once(tmp_path, train_set):
    one = tmp_path / "one"
    assert train_main.main(args_for(train_set, one, "--max_train_epochs", "1", "--seed", "2")) == 0
    two = tmp_path / "two"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), os.path.join(SRC, "main.py")]
    result = subprocess.run(command + args_for(train_set, two, "--max_train_epochs", "1", "--seed", "2"), env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log_one, log_two = (one / "l" / "TRAIN.log").read_text(), (two / "l" / "TRAIN.log").read_text()
    for phase in ("val", "test"):
        assert table_counts(log_two, phase) == table_counts(log_one, phase) != {}
    assert log_two.count("|train|0|loss") == 1                     # rank 0 alone writes
    assert os.listdir(two / "c") == ["multi_class_4_classifier_epoch_00000.checkpoint"]
    options = torch.load(two / "m" / "ANIMAL-SPOT.pk", weights_only=True)["trainOpts"]
    assert options["processes"] == 2 and options["lr_effective"] == pytest.approx(1e-4 * 4 * 2)
    port = str(free_port())
    command[command.index("--master_port") + 1] = port
    resumed = subprocess.run(command + args_for(train_set, two, "--max_train_epochs", "2", "--seed", "2"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming with epoch 1" in (two / "l" / "TRAIN.log").read_text()
