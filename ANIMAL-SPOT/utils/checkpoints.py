"""Checkpoint files ``<prefix>_epoch_NNNNN.checkpoint``: written synchronously and
atomically, the newest ``keep`` kept (by epoch number), loaded safely; a truncated or
corrupt newest file is named and the previous one used."""

import glob
import logging
import os
import re
from typing import List, Optional, Tuple

import torch

from .atomic import atomic_torch_save

log = logging.getLogger("ANIMAL-SPOT")
CHECKPOINT_FORMAT = 2          # 2: parameters in the original's order, state after the epoch's steps
REQUIRED = ("modelState", "trainState")
REQUIRED_TRAIN = ("epoch", "optState")


class CheckpointFileError(RuntimeError):
    """A checkpoint cannot be used; the message names it."""


def load_failure(error: Exception) -> str:
    """The informative line of a ``torch.load`` failure."""
    text = str(error).strip()
    for line in text.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return "it holds Python objects, not only tensors and plain values: " + line.split(":", 1)[-1].strip()[:120]
    return text.splitlines()[0] if text else error.__class__.__name__


def safe_load(path: str):
    """``torch.load`` of plain dicts, tensors, strings and numbers only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def check_checkpoint(state, path: str) -> dict:
    if not isinstance(state, dict):
        raise CheckpointFileError(f"{path}: not a checkpoint (a {type(state).__name__})")
    missing = [k for k in REQUIRED if k not in state]
    if not missing and isinstance(state["trainState"], dict):
        missing = [f"trainState.{k}" for k in REQUIRED_TRAIN if k not in state["trainState"]]
    elif not missing:
        missing = ["trainState (not a dictionary)"]
    if missing:
        raise CheckpointFileError(f"{path}: not a complete checkpoint (missing {', '.join(missing)})")
    return state


class CheckpointHandler:
    def __init__(self, checkpoint_dir: str, prefix: str, keep: int = 5):
        if keep < 1:
            raise ValueError(f"--keep_checkpoints must be at least 1, not {keep}")
        self.dir, self.prefix, self.keep = checkpoint_dir, prefix, keep
        os.makedirs(checkpoint_dir, exist_ok=True)

    def path(self, epoch: int) -> str:
        return os.path.join(self.dir, f"{self.prefix}_epoch_{epoch:05d}.checkpoint")

    def files(self) -> List[str]:
        """Checkpoint paths, oldest first (by epoch number, not by name)."""
        pattern = re.compile(re.escape(self.prefix) + r"_epoch_(\d+)\.checkpoint$")
        found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(glob.escape(self.dir), f"{self.prefix}_*.checkpoint"))
                 if (m := pattern.search(os.path.basename(p)))]
        return [p for _, p in sorted(found)]

    def write(self, state: dict, epoch: int) -> str:
        path = self.path(epoch)
        log.debug(f"Writing checkpoint_dict to {path}")
        atomic_torch_save(state, path)
        for old in self.files()[:-self.keep]:
            os.remove(old)
        return path

    def latest(self) -> Optional[str]:
        files = self.files()
        return files[-1] if files else None

    def load_latest(self) -> Optional[Tuple[str, dict]]:
        """The newest checkpoint that loads, or None when there is none. An unreadable one
        (truncated, corrupt) is named in a warning and the previous one is tried; a
        readable one that lacks keys is an error."""
        for path in reversed(self.files()):
            try:
                state = safe_load(path)
            except Exception as error:
                log.warning(f"Checkpoint {path} cannot be read ({load_failure(error)}); trying the previous one")
                continue
            return path, check_checkpoint(state, path)
        return None
