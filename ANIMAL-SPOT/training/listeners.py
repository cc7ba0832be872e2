"""The concerns around the training loop, one listener each: the log lines, TensorBoard,
the best weights, the LR schedule, early stopping, checkpoints and the progress bar.
Only the main process (rank 0) writes."""

import copy
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..evaluation.metrics import METRICS
from .trainer import Batch, Listener, PassResult, TrainingError
from ..utils import summary
from ..utils.early_stopping import EarlyStoppingCriterion

log = logging.getLogger("ANIMAL-SPOT")


@dataclass(frozen=True)
class Monitor:
    """The validation figure that picks the best weights, drives the plateau scheduler
    and early stopping (``--monitor``): ``loss`` or an overall metric of the collection."""

    name: str = "accuracy"

    @property
    def mode(self) -> str:
        return "min" if self.name == "loss" else METRICS[self.name].mode

    @property
    def worst(self) -> float:
        """The starting point of the best so far (the original's 0.0 for accuracy)."""
        return float("inf") if self.mode == "min" else 0.0

    def value(self, r: PassResult) -> float:
        value = r.figure(self.name)
        return self.worst if math.isnan(value) else value

    def better(self, value: float, best: float) -> bool:
        return value < best if self.mode == "min" else value > best


class EpochLog(Listener):
    """The original's epoch line per pass (``train|0|loss:...|accuracy:...|lr:...|t:...``;
    multi-class lines carry the seed fork's ``mean_per_class_acc`` before ``lr``/``t``),
    and for multi-class runs the per-class table after validation and test (the test's
    with 95 % intervals)."""

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if not trainer.processes.main:
            return
        line = f"{r.phase}|{r.epoch}|loss:{r.loss:.3f}"
        line += "".join(f"|{k}:{v:.3f}" for k, v in METRICS.line(r.metrics).items())
        if r.lr is not None:
            line += f"|lr:{r.lr:.2e}"
        log.info(line + f"|t:{r.seconds:.1f}")
        if r.phase != "train" and trainer.num_classes > 2:
            for row in r.metrics.table(trainer.class_map.names, intervals=r.phase == "test"):
                log.info(f"{r.phase}|{r.epoch}|{row}")


class BestWeights(Listener):
    """Keeps the weights of the best validation figure (strictly better; accuracy starts
    at 0.0 as the original), with that validation's figures and logits (calibration and
    the unknown score are fitted on them, without a second pass)."""

    def __init__(self, initial: dict, monitor: Monitor = Monitor()):
        self.monitor = monitor
        self.metric, self.state = monitor.worst, copy.deepcopy(initial)
        self.epoch, self.summary, self.logits, self.labels, self.features = None, None, None, None, None

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if r.phase != "val":
            return
        value = self.monitor.value(r)
        if self.monitor.better(value, self.metric):
            self.metric, self.state = value, copy.deepcopy(trainer.model.state_dict())
            self.epoch, self.summary = r.epoch, r.metrics.summary(trainer.class_map.names, intervals=True)
            self.logits, self.labels, self.features = r.logits, r.labels, r.features

    def save(self, train_state, extra) -> None:
        train_state["best_metric"], train_state["best_model"] = self.metric, self.state
        extra["bestValidation"] = {"epoch": self.epoch, "summary": self.summary, "monitor": self.monitor.name}
        for key in ("logits", "labels", "features"):
            if getattr(self, key) is not None:
                extra["bestValidation"][key] = torch.from_numpy(getattr(self, key))

    def restore(self, train_state, extra) -> None:
        self.metric = float(train_state["best_metric"])
        if train_state.get("best_model") is not None:
            self.state = train_state["best_model"]
        best = extra.get("bestValidation") or {}
        self.epoch, self.summary = best.get("epoch"), best.get("summary")
        if best.get("monitor", self.monitor.name) != self.monitor.name:
            raise TrainingError(f"the checkpoint chose its best weights by {best.get('monitor')}, this run by "
                                f"{self.monitor.name}: pass --monitor {best.get('monitor')} or --start_from_scratch")
        for key in ("logits", "labels", "features"):
            if best.get(key) is not None:
                setattr(self, key, best[key].numpy())


class Scheduler(Listener):
    """An LR scheduler as a listener; its state is the original's ``trainState.scheduler``."""

    scheduler = None

    def save(self, train_state, extra) -> None:
        train_state["scheduler"] = self.scheduler.state_dict()

    def restore(self, train_state, extra) -> None:
        if train_state.get("scheduler"):
            self.scheduler.load_state_dict(train_state["scheduler"])


class PlateauScheduler(Scheduler):
    """The original's LR schedule: ReduceLROnPlateau on the monitored validation figure
    (accuracy, mode max, as the original; absolute threshold 1e-3), stepped after each
    validation."""

    def __init__(self, optimizer, patience: int, factor: float, monitor: Monitor = Monitor()):
        self.monitor = monitor
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=monitor.mode, patience=patience, factor=factor, threshold=1e-3, threshold_mode="abs")

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if r.phase == "val":
            self.scheduler.step(self.monitor.value(r))


class OneCycleScheduler(Scheduler):
    """One-cycle LR (peak = the effective LR, per parameter group), stepped after every training batch."""

    def __init__(self, optimizer, peak_lr, total_steps: int):
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak_lr,
                                                             total_steps=max(1, total_steps))

    def on_batch_end(self, trainer, batch: Batch) -> None:
        if batch.phase == "train" and self.scheduler.last_epoch + 1 < self.scheduler.total_steps:
            self.scheduler.step()


class CosineScheduler(Scheduler):
    """Cosine annealing from the effective LR to 0 over the run, stepped per epoch."""

    def __init__(self, optimizer, epochs: int):
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if r.phase == "train":
            self.scheduler.step()


class EarlyStopping(Listener):
    """Stop after ``patience + 1`` consecutive worse validations (equal counts as
    improvement, as the original); patience is given in epochs and counted in validations."""

    def __init__(self, patience_epochs: int, epochs_per_eval: int, monitor: Monitor = Monitor()):
        self.patience_epochs, self.monitor = patience_epochs, monitor
        self.criterion = EarlyStoppingCriterion(max(1, math.ceil(patience_epochs / epochs_per_eval)), monitor.mode)

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if r.phase == "val" and self.criterion.step(self.monitor.value(r)):
            self._stop(trainer)

    def _stop(self, trainer) -> None:
        trainer.request_stop(f"No improvement over the last {self.criterion.patience + 1} validations "
                             f"(early stopping patience {self.patience_epochs} epochs). Stopping.")

    def save(self, train_state, extra) -> None:
        train_state["earlyStopping"] = self.criterion.state_dict()

    def restore(self, train_state, extra) -> None:
        if train_state.get("earlyStopping"):
            self.criterion.load_state_dict(train_state["earlyStopping"])

    def on_fit_start(self, trainer) -> None:
        if self.criterion._count > self.criterion.patience:
            self._stop(trainer)      # resumed from the checkpoint of the stopping validation


class CheckpointWriter(Listener):
    """Writes a checkpoint after each validation (last among the listeners), on rank 0."""

    def __init__(self, handler):
        self.handler = handler

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if r.phase == "val" and trainer.processes.main:
            self.handler.write(trainer.checkpoint(r.epoch), r.epoch)


class Progress(Listener):
    """A progress bar per pass on standard error (batches, loss, samples/s, ETA); quiet
    when standard error is not a terminal."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def on_pass_start(self, trainer, phase, epoch, batches) -> None:
        if self.enabled and trainer.processes.main:
            self.bar = tqdm(total=batches, desc=f"{phase} {epoch}", unit="batch", leave=False, disable=None,
                            dynamic_ncols=True)
            self.samples, self.started = 0, time.time()

    def on_batch_end(self, trainer, batch: Batch) -> None:
        if self.bar is not None:
            self.samples += batch.inputs.shape[0]
            rate = self.samples / max(time.time() - self.started, 1e-9)
            self.bar.set_postfix(loss=f"{batch.loss:.3f}", samples_s=f"{rate:.0f}", refresh=False)
            self.bar.update(1)

    def on_pass_end(self, trainer, r) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoardWriter(Listener):
    """Per pass: ``<phase>/epoch_loss``, the collection's TensorBoard scalars
    (``evaluation.metrics.METRICS``: the epoch line's figures; multi-class runs also
    ``per_class_accuracy|per_class_f1|per_class_precision/<CLASS>``,
    ``mean_per_class_accuracy``, ``balanced_accuracy``, ``macro_f1``), ``lr``,
    ``<phase>/time``, ``<phase>/data_loading_time``; the confusion matrices (multi-class)
    or the ROC curve (binary). Images of the first batch."""

    def __init__(self, summary_dir: Optional[str], prefix: str):
        log.info("Init summary writer")
        self.writer = SummaryWriter(log_dir=summary_run_dir(summary_dir, prefix))

    def on_batch_end(self, trainer, batch: Batch) -> None:
        if batch.index != 0 or not trainer.processes.main or batch.inputs.dim() != 4:
            return                                         # raw audio (B, 1, samples) has no spectrogram to show
        names = trainer.class_map.names
        for item, true, pred in zip(batch.inputs, batch.targets.tolist(), batch.predictions.tolist()):
            verdict = "true" if true == pred else "false"
            self.writer.add_image(f"{batch.phase}/{verdict} - {names[true]} as {names[pred]}",
                                  summary.spectrogram_image(item), batch.epoch)

    def on_pass_end(self, trainer, r: PassResult) -> None:
        if not trainer.processes.main:
            return
        w, phase, epoch, m = self.writer, r.phase, r.epoch, r.metrics
        w.add_scalar(f"{phase}/epoch_loss", r.loss, epoch)
        names = trainer.class_map.names
        for tag, value in METRICS.board(m, names):
            w.add_scalar(f"{phase}/{tag}", value, epoch)
        if r.lr is not None:
            w.add_scalar("lr", r.lr, epoch)
        w.add_scalar(f"{phase}/time", r.seconds, epoch)
        w.add_scalar(f"{phase}/data_loading_time", r.load_seconds, epoch)
        if m.binary:
            fpr, tpr, auc = m.roc()
            w.add_figure(f"{phase}_roc/roc", summary.roc_figure(fpr, tpr, auc), epoch)
            return
        raw, norm = m.matrix, m.normalized_confusion()
        w.add_image(f"{phase}_confusion_matrix_norm/cm_numbered",
                    summary.confusion_image(norm, names, True, "Confusion matrix (normalised)"), epoch)
        w.add_image(f"{phase}_confusion_matrix_norm/cm",
                    summary.confusion_image(norm, names, False, "Confusion matrix (normalised)"), epoch)
        w.add_image(f"{phase}_confusion_matrix_raw/cm_numbered",
                    summary.confusion_image(raw, names, True, "Confusion matrix"), epoch)

    def on_fit_end(self, trainer) -> None:
        self.writer.close()


def summary_run_dir(summary_dir: Optional[str], prefix: str) -> Optional[str]:
    if summary_dir is None:
        return None
    stamp = datetime.now().strftime("%y-%m-%d-%H-%M")
    return os.path.join(summary_dir, f"{prefix}_{stamp}-{socket.gethostname()}")
