"""Checkpoint files ``<prefix>_epoch_NNNNN.checkpoint``: written synchronously and
atomically (temporary name, then rename), the newest ``keep`` kept, loaded safely."""

import glob
import logging
import os
import re
from typing import Optional

import torch

log = logging.getLogger("ANIMAL-SPOT")


def atomic_save(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def safe_load(path: str):
    """``torch.load`` of plain dicts, tensors, strings and numbers only."""
    return torch.load(path, map_location="cpu", weights_only=True)


class CheckpointHandler:
    def __init__(self, checkpoint_dir: str, prefix: str, keep: int = 5):
        self.dir, self.prefix, self.keep = checkpoint_dir, prefix, keep
        os.makedirs(checkpoint_dir, exist_ok=True)

    def path(self, epoch: int) -> str:
        return os.path.join(self.dir, f"{self.prefix}_epoch_{epoch:05d}.checkpoint")

    def files(self):
        pattern = re.compile(re.escape(self.prefix) + r"_epoch_(\d+)\.checkpoint$")
        found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(self.dir, f"{self.prefix}_*.checkpoint"))
                 if (m := pattern.search(os.path.basename(p)))]
        return [p for _, p in sorted(found)]

    def write(self, state: dict, epoch: int) -> str:
        path = self.path(epoch)
        log.debug(f"Writing checkpoint_dict to {path}")
        atomic_save(state, path)
        for old in self.files()[:-self.keep]:
            os.remove(old)
        return path

    def latest(self) -> Optional[str]:
        files = self.files()
        return files[-1] if files else None
