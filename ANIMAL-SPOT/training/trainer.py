"""The training loop: one pass function for train, val and test, and listeners for the
concerns around it (log lines, TensorBoard, best weights, LR schedule, early stopping,
checkpoints, progress). A listener has hooks for the start of a fit, the end of a batch
and the end of a pass, and keeps its own state in checkpoints; the trainer only runs
passes. Mixed precision, gradient clipping, mixup and ``torchrun`` change the step, not
the listeners. Library code raises ``TrainingError``; ``main`` chooses the exit status.

Order after a validation (``epoch % epochs_per_eval == 0`` or the last epoch): best
weights (strictly better monitored figure), LR scheduler, early stopping, then the
checkpoint, so a checkpoint holds the state *after* its epoch and a resumed run
continues exactly. Validation and test passes keep their logits (gathered over the
processes), so calibration needs no second pass.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..evaluation.metrics import METRICS, PassMetrics
from ..utils.checkpoints import CHECKPOINT_FORMAT
from ..utils.classmap import ClassMap, binary_count
from ..utils.runtime import Forward, Precision, Processes
from ..utils.seeding import batch_generator, epoch_seed

log = logging.getLogger("ANIMAL-SPOT")
PHASES = ("train", "val", "test")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why."""


def model_prefix(num_classes: int) -> str:
    return "binary_classifier" if binary_count(num_classes) else f"multi_class_{num_classes}_classifier"


@dataclass
class Batch:
    phase: str
    epoch: int
    index: int
    inputs: torch.Tensor
    targets: torch.Tensor
    predictions: torch.Tensor
    loss: float


@dataclass
class PassResult:
    phase: str
    epoch: int
    loss: float
    metrics: PassMetrics
    seconds: float
    load_seconds: float
    lr: Optional[float] = None
    batches: int = 0
    logits: Optional[np.ndarray] = None      # val / test: (samples, classes) float64, every process's
    labels: Optional[np.ndarray] = None
    features: Optional[np.ndarray] = None    # val / test: pooled encoder features (the unknown score)

    @property
    def accuracy(self) -> float:
        return self.metrics.accuracy()

    def figure(self, name: str) -> float:
        """A figure by name: ``loss`` or any overall metric of ``evaluation.metrics.METRICS``."""
        return self.loss if name == "loss" else float(METRICS[name].compute(self.metrics))


class Listener:
    """Hooks of a fit. ``save``/``restore`` put the listener's state into a checkpoint:
    ``train_state`` is the original's ``trainState`` dict, ``extra`` this project's."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...

    def on_pass_start(self, trainer: "Trainer", phase: str, epoch: int, batches: int) -> None: ...

    def on_batch_end(self, trainer: "Trainer", batch: Batch) -> None: ...

    def on_pass_end(self, trainer: "Trainer", result: PassResult) -> None: ...

    def on_fit_end(self, trainer: "Trainer") -> None: ...

    def save(self, train_state: dict, extra: dict) -> None: ...

    def restore(self, train_state: dict, extra: dict) -> None: ...


@dataclass
class Step:
    """How one training step runs: precision (autocast, gradient scaler), gradient
    clipping, the input memory format and mixup (``mixup`` = Beta alpha, None = off)."""

    precision: Precision = field(default_factory=Precision)
    grad_clip: Optional[float] = None
    memory_format: torch.memory_format = torch.contiguous_format
    scaler: Optional[torch.amp.GradScaler] = None
    mixup: Optional[float] = None


class Trainer:
    def __init__(self, model: nn.Module, class_map: ClassMap, device: torch.device, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, listeners: Sequence[Listener] = (), step: Optional[Step] = None,
                 processes: Processes = Processes(), seed: int = 0, network: Optional[nn.Module] = None):
        self.model = model                       # the plain model (weights, checkpoints)
        self.network = network or model          # what runs the batches (DDP / compiled wrapper)
        self.class_map = class_map
        self.num_classes = max(2, len(class_map))
        self.device = device
        self.loss_fn = loss_fn.to(device)
        self.optimizer = optimizer
        self.listeners: List[Listener] = list(listeners)
        self.step = step or Step()
        self.forward = Forward(device, self.step.precision, self.step.memory_format)
        self.processes = processes
        self.seed = seed
        self.stop_reason: Optional[str] = None
        self.skipped = 0
        self.results: Dict[str, PassResult] = {}

    # ------------------------------------------------------------------- one pass
    def run_pass(self, phase: str, loader, epoch: int) -> PassResult:
        """One pass over ``loader``; ``phase`` is train, val or test."""
        training = phase == "train"
        self.network.train(training)
        frozen(self.model)
        if training:
            torch.manual_seed(epoch_seed(self.seed, epoch, "torch"))     # dropout / stochastic depth
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        metrics = PassMetrics(self.num_classes, self.device, keep_samples=phase == "test")
        binary = self.class_map.is_binary
        self._emit("on_pass_start", phase, epoch, len(loader))
        log.debug(f"{phase}|{epoch}|start")
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        batches, load_time, self.skipped = 0, 0.0, 0
        kept_logits, kept_labels, kept_features = [], [], []
        start = tick = time.time()
        with torch.set_grad_enabled(training):
            for index, (inputs, label) in enumerate(loader):
                load_time += time.time() - tick
                inputs = self.forward.inputs(inputs)
                targets = label["call"].to(self.device, non_blocking=True)
                if training:
                    logits, loss = self._step(inputs, targets, epoch, index)
                else:
                    logits, loss = self._evaluate(inputs, targets)
                if bool(torch.isfinite(loss)):
                    loss_sum += loss.double()
                    batches += 1
                predictions = logits.argmax(dim=1)
                scores = torch.softmax(logits.detach().float(), dim=1)[:, 1] if binary else None
                metrics.update(targets, predictions, scores=scores)
                if not training:
                    kept_logits.append(logits.cpu())
                    kept_labels.append(targets.cpu())
                    kept_features.append(self.pooled())
                self._emit("on_batch_end", Batch(phase, epoch, index, inputs, targets, predictions, float(loss)))
                tick = time.time()
        totals = self.processes.sum(torch.stack([loss_sum, torch.tensor(float(batches), dtype=torch.float64,
                                                                        device=self.device)]))
        self.processes.sum(metrics.confusion)
        if self.processes.distributed and (metrics.samples or metrics.scores):
            metrics.merge_samples(self.processes.gather(metrics.sample_state()))
        mean_loss = float(totals[0] / totals[1]) if float(totals[1]) else float("nan")
        if self.skipped:
            log.warning(f"{phase}|{epoch}|{self.skipped} batch(es) with a non-finite loss were not used for a step"
                        + (f" ({self.step.precision.name}; try without --amp)" if self.step.precision.dtype else ""))
        lr = self.optimizer.param_groups[0]["lr"] if training else None      # the head's (its group comes first)
        result = PassResult(phase, epoch, mean_loss, metrics, time.time() - start, load_time, lr, batches)
        if not training:
            result.logits, result.labels, result.features = self._gathered(kept_logits, kept_labels, kept_features)
        self.results[phase] = result
        self._emit("on_pass_end", result)
        return result

    def pooled(self) -> Optional[torch.Tensor]:
        """The pooled encoder features of the last forward (None where the network does not
        keep them, e.g. compiled)."""
        hidden = getattr(getattr(self.model, "classifier", None), "hidden_layer_1", None)
        return None if hidden is None else hidden.float().cpu()

    def _gathered(self, logits: List[torch.Tensor], labels: List[torch.Tensor], features: List):
        kept = features if features and all(f is not None for f in features) else None
        parts = self.processes.gather((torch.cat(logits) if logits else torch.zeros(0, self.num_classes),
                                       torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
                                       torch.cat(kept) if kept else None))
        gathered_features = None
        if all(p[2] is not None for p in parts):
            gathered_features = torch.cat([p[2] for p in parts]).numpy().astype(np.float64)
        return (torch.cat([p[0] for p in parts]).numpy().astype(np.float64),
                torch.cat([p[1] for p in parts]).numpy(), gathered_features)

    def _evaluate(self, inputs, targets):
        logits = self.forward(self.network, inputs)
        return logits, self.loss_fn(logits, targets).detach()

    def _step(self, inputs, targets, epoch: int, index: int):
        """One optimiser step (none on a non-finite loss)."""
        step = self.step
        self.optimizer.zero_grad(set_to_none=True)
        if step.mixup:
            mixed, permutation, lam = mixup(inputs, step.mixup, batch_generator(self.seed, epoch, index, "mixup"))
            logits = self.forward(self.network, mixed)
            loss = lam * self.loss_fn(logits, targets) + (1 - lam) * self.loss_fn(logits, targets[permutation])
        else:
            logits = self.forward(self.network, inputs)
            loss = self.loss_fn(logits, targets)
        if not bool(torch.isfinite(loss)):
            self.skipped += 1           # no step on a non-finite loss (reported after the pass)
            return logits.detach(), loss.detach()
        if step.scaler is not None:
            step.scaler.scale(loss).backward()
            if step.grad_clip:
                step.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), step.grad_clip)
            step.scaler.step(self.optimizer)
            step.scaler.update()
        else:
            loss.backward()
            if step.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), step.grad_clip)
            self.optimizer.step()
        return logits.detach(), loss.detach()

    def recompute_batchnorm(self, loader) -> None:
        """BatchNorm's statistics of the current weights (``recompute_batchnorm``)."""
        recompute_batchnorm(self.model, loader, self.forward)

    @torch.no_grad()
    def evaluate(self, loader):
        """``(logits, labels, pooled features)`` of a whole split in eval mode, without
        listeners (the training clips' centroids; a resumed run whose checkpoint kept no
        validation logits)."""
        self.model.eval()
        logits, labels, features = [], [], []
        for inputs, label in loader:
            logits.append(self.forward(self.model, inputs).cpu())
            labels.append(label["call"])
            features.append(self.pooled())
        if not logits:
            return np.zeros((0, self.num_classes)), np.zeros(0, dtype=int), None
        kept = torch.cat(features).numpy().astype(np.float64) if all(f is not None for f in features) else None
        return torch.cat(logits).numpy().astype(np.float64), torch.cat(labels).numpy(), kept

    # --------------------------------------------------------------------- the fit
    def fit(self, loaders: Dict[str, object], n_epochs: int, epochs_per_eval: int, start_epoch: int = 0) -> PassResult:
        """Epochs ``start_epoch .. n_epochs-1``, then the test pass on the best weights."""
        self._emit("on_fit_start")
        started = time.time()
        for epoch in range(start_epoch, n_epochs):
            if self.stop_reason:
                break
            self.run_pass("train", loaders["train"], epoch)
            if epoch % epochs_per_eval == 0 or epoch == n_epochs - 1:
                self.recompute_batchnorm(loaders.get("statistics"))
                self.run_pass("val", loaders["val"], epoch)
            if self.stop_reason:
                log.info(self.stop_reason)
        best = self.best_weights()
        if best is not None:
            self.model.load_state_dict(best.state)
        test = self.run_pass("test", loaders["test"], 0)
        elapsed = time.time() - started
        log.info(f"Training complete in {elapsed // 60:.0f}m {elapsed % 60:.0f}s")
        log.info(f"Best val metric: {best.metric if best else 0.0:4f}")
        if best is not None and best.epoch is not None:
            log.info(f"best weights by {best.monitor.name}: {best.metric:.3f} at epoch {best.epoch}")
        log.info(f"Final test metric: {test.accuracy:4f}")
        self._emit("on_fit_end")
        return test

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def best_weights(self) -> Optional[Listener]:
        """The listener that tracks the best validation weights (``metric``, ``state``,
        ``epoch``, ``monitor``, the validation ``logits``)."""
        for listener in self.listeners:
            if hasattr(listener, "metric") and hasattr(listener, "state"):
                return listener
        return None

    def _emit(self, hook: str, *args) -> None:
        for listener in self.listeners:
            getattr(listener, hook)(self, *args)

    def checkpoint(self, epoch: int) -> dict:
        return checkpoint_state(self, epoch)

    def restore(self, checkpoint: dict) -> int:
        """Load a (migrated) checkpoint; returns the epoch to continue with."""
        return restore_checkpoint(self, checkpoint)


def frozen(model: nn.Module) -> None:
    """A frozen encoder (``--freeze_backbone``) stays in eval mode: its BatchNorm statistics and
    dropout as they start, in every phase."""
    encoder = getattr(model, "encoder", None)
    if getattr(encoder, "frozen", False):
        encoder.eval()


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, loader, forward: Forward) -> None:
    """BatchNorm's statistics of the current weights, measured afresh on ``loader``
    (fixed training clips, no augmentation; None: keep the running averages, as the
    original). The running averages trail the weights: after a few hundred steps at a
    high learning rate they describe an earlier network, and a model that fits its
    training batches can predict one class in eval mode. Here every BatchNorm layer
    (alone in train mode, so dropout stays off) averages the batch means and
    variances of one pass; the weights and the training steps are not touched."""
    encoder = getattr(model, "encoder", None)                # a frozen encoder keeps its statistics
    kept = {id(m) for m in encoder.modules()} if getattr(encoder, "frozen", False) else set()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept]
    if loader is None or not norms:
        return
    momenta = [m.momentum for m in norms]
    model.eval()                                # dropout and stochastic depth off; then BatchNorm alone on
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                    # a cumulative average over the pass's batches
        norm.train()
    try:
        for inputs, _ in loader:
            forward(model, inputs)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
            norm.eval()


def checkpoint_state(trainer: Trainer, epoch: int) -> dict:
    """The original's checkpoint keys, then this project's (``formatVersion``, ``fork``)."""
    train_state = {"epoch": epoch, "best_metric": 0.0, "best_model": None,
                   "optState": trainer.optimizer.state_dict(), "earlyStopping": None, "scheduler": None}
    extra = {"seed": trainer.seed, "precision": trainer.step.precision.name,
             "memoryFormat": "channels_last" if trainer.step.memory_format == torch.channels_last else "contiguous"}
    if trainer.step.scaler is not None:
        extra["scaler"] = trainer.step.scaler.state_dict()
    for listener in trainer.listeners:
        listener.save(train_state, extra)
    return {"modelState": trainer.model.state_dict(), "trainState": train_state,
            "classes": trainer.class_map.to_dict(), "formatVersion": CHECKPOINT_FORMAT, "fork": extra}


def restore_checkpoint(trainer: Trainer, checkpoint: dict) -> int:
    """Load a (migrated) checkpoint into the trainer; returns the epoch to continue with."""
    own, theirs = set(trainer.model.state_dict()), set(checkpoint["modelState"])
    if own != theirs:
        missing, unexpected = sorted(own - theirs), sorted(theirs - own)
        raise TrainingError("Failed to restore checkpoint: Checkpoint has different parameters (another "
                            f"backbone or size?): {len(missing)} missing, e.g. {missing[:2]}; "
                            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}")
    try:
        trainer.model.load_state_dict(checkpoint["modelState"])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise TrainingError(f"Failed to restore checkpoint: Checkpoint has different parameters ({first})") from None
    train_state, extra = checkpoint["trainState"], checkpoint.get("fork") or {}
    try:
        trainer.optimizer.load_state_dict(train_state["optState"])
    except (ValueError, KeyError, RuntimeError) as error:
        raise TrainingError(f"Failed to restore checkpoint: its optimizer state does not fit ({error})") from None
    if trainer.step.scaler is not None and "scaler" in extra:
        trainer.step.scaler.load_state_dict(extra["scaler"])
    for listener in trainer.listeners:
        listener.restore(train_state, extra)
    return int(train_state["epoch"]) + 1


def mixup(inputs: torch.Tensor, alpha: float, generator: torch.Generator):
    """``(mixed inputs, permutation, lambda)``: every input mixed with a partner of the
    same batch, ``lambda ~ Beta(alpha, alpha)`` (Zhang et al. 2018), both drawn from
    ``generator``; the loss is ``lambda * loss(y) + (1 - lambda) * loss(y[permutation])``."""
    from scipy.stats import beta

    lam = float(beta.ppf(float(torch.rand((), generator=generator)), alpha, alpha))   # inverse-CDF draw
    permutation = torch.randperm(inputs.shape[0], generator=generator).to(inputs.device)
    return lam * inputs + (1 - lam) * inputs[permutation], permutation, lam
