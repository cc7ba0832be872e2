"""Shared test set-up: the framework folder on sys.path, quiet threads, small data."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


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
