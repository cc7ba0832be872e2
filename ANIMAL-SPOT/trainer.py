"""The training loop: one epoch function for train, val and test; checkpoints; TensorBoard."""

import copy
import logging
import math
import os
import socket
import time
import traceback
from datetime import datetime
from typing import Dict, Optional

import torch
import torch.nn as nn

from utils.checkpoints import CheckpointHandler, safe_load
from utils.early_stopping import EarlyStoppingCriterion
from utils.metrics import ConfusionMatrix, PassMetrics, PerClassAccuracy, RocMeter
from utils import summary

log = logging.getLogger("ANIMAL-SPOT")


class TrainingAborted(SystemExit):
    """Training stopped on an error; the process exits with status 1."""

    def __init__(self):
        super().__init__(1)


def model_prefix(num_classes: int) -> str:
    return "binary_classifier" if num_classes == 2 else f"multi_class_{num_classes}_classifier"


def summary_run_dir(summary_dir: Optional[str], prefix: str) -> Optional[str]:
    if summary_dir is None:
        return None
    stamp = datetime.now().strftime("%y-%m-%d-%H-%M")
    return os.path.join(summary_dir, f"{prefix}_{stamp}-{socket.gethostname()}")


class Trainer:
    """Fits a ``Sequential(encoder, classifier)``.

    Validation runs after epochs ``e % epochs_per_eval == 0`` and after the last one; the
    best validation accuracy keeps its weights; ReduceLROnPlateau and early stopping are
    stepped after each validation; the test pass runs on the best weights.
    """

    def __init__(self, model: nn.Module, classes: Dict[str, int], device: torch.device,
                 checkpoint_dir: Optional[str] = None, summary_dir: Optional[str] = None,
                 start_scratch: bool = False, keep_checkpoints: int = 5):
        self.model = model.to(device)
        self.classes = dict(classes)
        self.num_classes = max(2, len(self.classes))
        self.class_names = [None] * self.num_classes
        for name, index in self.classes.items():
            self.class_names[index] = self.class_names[index] or name
        self.device = device
        self.prefix = model_prefix(len(self.classes))
        self.start_scratch = start_scratch
        self.checkpoints = CheckpointHandler(checkpoint_dir, self.prefix, keep_checkpoints) if checkpoint_dir else None
        if self.checkpoints is None:
            log.warning("No --checkpoint_dir: no checkpoints are written and training cannot resume")
        from torch.utils.tensorboard import SummaryWriter
        log.info("Init summary writer")
        self.writer = SummaryWriter(log_dir=summary_run_dir(summary_dir, self.prefix))
        self.metrics = PassMetrics(self.num_classes)
        self.per_class = PerClassAccuracy(self.num_classes)
        self.confusion = ConfusionMatrix(self.num_classes)
        self.roc = RocMeter()

    # ------------------------------------------------------------------------ epochs
    def run_epoch(self, phase: str, loader, epoch: int, loss_fn, optimizer=None) -> float:
        """One pass over ``loader``; returns the accuracy. ``phase`` is train, val or test."""
        training = phase == "train"
        self.model.train(training)
        for meter in (self.metrics, self.per_class, self.confusion, self.roc):
            meter.reset()
        log.debug(f"{phase}|{epoch}|start")
        total_loss, batches, load_time = 0.0, 0, 0.0
        start = tick = time.time()
        with torch.set_grad_enabled(training):
            for batch_index, (features, label) in enumerate(loader):
                load_time += time.time() - tick
                features = features.to(self.device, non_blocking=True)
                target = label["call"].to(self.device, non_blocking=True)
                if training:
                    optimizer.zero_grad(set_to_none=True)
                logits = self.model(features)
                loss = loss_fn(logits, target)
                if training:
                    loss.backward()
                    optimizer.step()
                total_loss += float(loss.detach())
                batches += 1
                prediction = logits.argmax(dim=1)
                self.metrics.update(target, prediction)
                self.per_class.update(target, prediction)
                if self.num_classes == 2:
                    self.roc.update(torch.softmax(logits.detach(), dim=1)[:, 1], target)
                else:
                    self.confusion.update(target, prediction)
                if batch_index == 0:
                    self._write_images(phase, epoch, features, target, prediction)
                tick = time.time()
        elapsed = time.time() - start
        results = self.metrics.compute()
        epoch_loss = total_loss / batches if batches else float("nan")
        line = f"{phase}|{epoch}|loss:{epoch_loss:.3f}" + "".join(f"|{k}:{v:.3f}" for k, v in results.items())
        if training:
            lr = optimizer.param_groups[0]["lr"]
            line += f"|lr:{lr:.2e}"
            self.writer.add_scalar("lr", lr, epoch)
        log.info(line + f"|t:{elapsed:.1f}")
        self._write_scalars(phase, epoch, epoch_loss, results, elapsed, load_time)
        if phase != "train" and self.num_classes > 2:
            for row in self.per_class.table(self.class_names):
                log.info(f"{phase}|{epoch}|{row}")
        return results["accuracy"]

    # -------------------------------------------------------------------- the run
    def fit(self, train_loader, val_loader, test_loader, loss_fn, optimizer, scheduler,
            n_epochs: int, epochs_per_eval: int, early_stopping_patience: int) -> nn.Module:
        stopper = EarlyStoppingCriterion(max(1, math.ceil(early_stopping_patience / epochs_per_eval)))
        best_metric, best_state, start_epoch = 0.0, copy.deepcopy(self.model.state_dict()), 0
        if self.checkpoints and not self.start_scratch:
            restored = self._restore(optimizer, scheduler, stopper)
            if restored:
                start_epoch, best_metric, best_state = restored
        log.info(f"Start training model {self.prefix}")
        started = time.time()
        try:
            for epoch in range(start_epoch, n_epochs):
                self.run_epoch("train", train_loader, epoch, loss_fn, optimizer)
                if epoch % epochs_per_eval != 0 and epoch != n_epochs - 1:
                    continue
                val_result = self.run_epoch("val", val_loader, epoch, loss_fn)
                if val_result > best_metric:
                    best_metric, best_state = val_result, copy.deepcopy(self.model.state_dict())
                if self.checkpoints:
                    self.checkpoints.write({
                        "modelState": self.model.state_dict(),
                        "trainState": {"epoch": epoch, "best_metric": best_metric, "best_model": best_state,
                                       "optState": optimizer.state_dict(),
                                       "earlyStopping": stopper.state_dict(),
                                       "scheduler": scheduler.state_dict()},
                        "classes": self.classes,
                    }, epoch)
                scheduler.step(val_result)
                if stopper.step(val_result):
                    log.info(f"No improvement over the last {stopper.patience + 1} validations "
                             f"(early stopping patience {early_stopping_patience} epochs). Stopping.")
                    break
        except KeyboardInterrupt:
            log.warning("Interrupted. Aborting...")
            raise TrainingAborted()
        except Exception:
            log.warning(traceback.format_exc())
            log.warning("Aborting...")
            raise TrainingAborted()

        self.model.load_state_dict(best_state)
        test_result = self.run_epoch("test", test_loader, 0, loss_fn)
        elapsed = time.time() - started
        log.info(f"Training complete in {elapsed // 60:.0f}m {elapsed % 60:.0f}s")
        log.info(f"Best val metric: {best_metric:4f}")
        log.info(f"Final test metric: {test_result:4f}")
        self.writer.close()
        return self.model

    def _restore(self, optimizer, scheduler, stopper):
        path = self.checkpoints.latest()
        if path is None:
            log.info(f"No checkpoints found in {self.checkpoints.dir}")
            return None
        log.info(f"Restoring checkpoint {path}")
        try:
            state = safe_load(path)
            train_state = state["trainState"]
        except KeyError as error:
            log.error(f"Failed to restore checkpoint {path}: missing {error}")
            raise
        try:
            self.model.load_state_dict(state["modelState"])
        except RuntimeError as error:
            log.error(f"Failed to restore checkpoint: Checkpoint has different parameters\n{error}")
            raise TrainingAborted()
        optimizer.load_state_dict(train_state["optState"])
        scheduler.load_state_dict(train_state["scheduler"])
        stopper.load_state_dict(train_state["earlyStopping"])
        start_epoch = train_state["epoch"] + 1
        log.info(f"Resuming with epoch {start_epoch}")
        return start_epoch, train_state["best_metric"], train_state["best_model"]

    # ---------------------------------------------------------------- TensorBoard
    def _write_scalars(self, phase, epoch, loss, results, elapsed, load_time):
        w = self.writer
        w.add_scalar(f"{phase}/epoch_loss", loss, epoch)
        for name, value in results.items():
            w.add_scalar(f"{phase}/{name}", value, epoch)
        w.add_scalar(f"{phase}/time", elapsed, epoch)
        w.add_scalar(f"{phase}/data_loading_time", load_time, epoch)
        if self.num_classes == 2:
            fpr, tpr, auc = self.roc.curve()
            figure = summary.roc_figure(fpr, tpr, auc)
            w.add_figure(f"{phase}_roc/roc", figure, epoch)
            return
        for name, value in zip(self.class_names, self.per_class.compute().tolist()):
            if not math.isnan(value):      # a class absent from the split has no accuracy
                w.add_scalar(f"{phase}/per_class_accuracy/{name}", value, epoch)
        mean = self.per_class.mean()
        if not math.isnan(mean):
            w.add_scalar(f"{phase}/mean_per_class_accuracy", mean, epoch)
        raw = self.confusion.matrix.numpy().astype(float)
        norm = self.confusion.normalized().numpy()
        w.add_figure(f"{phase}_confusion_matrix_norm/cm_numbered",
                     summary.confusion_figure(norm, self.class_names, True, "Confusion matrix (normalised)"), epoch)
        w.add_figure(f"{phase}_confusion_matrix_norm/cm",
                     summary.confusion_figure(norm, self.class_names, False, "Confusion matrix (normalised)"), epoch)
        w.add_figure(f"{phase}_confusion_matrix_raw/cm_numbered",
                     summary.confusion_figure(raw, self.class_names, True, "Confusion matrix"), epoch)

    def _write_images(self, phase, epoch, features, target, prediction):
        for item, true, pred in zip(features, target.tolist(), prediction.tolist()):
            verdict = "true" if true == pred else "false"
            tag = f"{phase}/{verdict} - {self.class_names[true]} as {self.class_names[pred]}"
            self.writer.add_image(tag, summary.spectrogram_image(item), epoch)
