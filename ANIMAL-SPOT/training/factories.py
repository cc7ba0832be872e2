"""The parts of a training run, each built from the run configuration by one small
factory: the optimizer, the loss, the LR schedule, the monitored figure, the listeners
and the training step. ``main.py`` calls them in order; nothing else reads the command
line."""

import logging
import math
from typing import List, Optional

import torch

from . import listeners as L
from ..models.losses import class_weights, make_loss, weights_table
from .trainer import Step, model_prefix
from .data import TrainingData
from ..utils import runtime
from ..utils.checkpoints import CheckpointHandler


def effective_lr(config, processes: runtime.Processes) -> float:
    """The original's rule (lr x batch size), with the global batch of all processes."""
    return config.lr * config.batch_size * processes.world


def optimizer(config, model: torch.nn.Module, processes: runtime.Processes) -> torch.optim.Optimizer:
    """Adam as the original (beta2 0.999), with this project's weight decay; the encoder
    frozen (``--freeze_backbone``) or at its own learning rate (``--backbone_lr``)."""
    lr = effective_lr(config, processes)
    groups = [{"params": list(model.parameters())}]           # the original's one group (checkpoints keep it)
    if config.freeze_backbone:
        for parameter in model.encoder.parameters():
            parameter.requires_grad_(False)
        model.encoder.frozen = True                  # and in eval mode in every phase (trainer.frozen)
        groups = [{"params": list(model.classifier.parameters())}]
    elif config.backbone_lr:                         # the head's group first: the epoch line shows its rate
        groups = [{"params": list(model.classifier.parameters())},
                  {"params": list(model.encoder.parameters()),
                   "lr": config.backbone_lr * config.batch_size * processes.world}]
    return torch.optim.Adam(groups, lr=lr, betas=(config.beta1, 0.999), weight_decay=config.weight_decay)


def loss(config, data: TrainingData, log: logging.Logger) -> torch.nn.Module:
    """Cross-entropy or focal loss, with class weights from the training split and label
    smoothing (mixup is applied around it by the training step)."""
    weights = None
    if config.class_weights != "none":
        names, counts = data.class_map.names, data.train_counts
        weights = class_weights(counts, config.class_weights, names)
        log.info(f"Class weights ({config.class_weights}, from the training split):")
        for row in weights_table(names, counts, weights):
            log.info("  " + row)
    return make_loss(config.loss, weights, config.label_smoothing, config.focal_gamma)


def monitor(config) -> L.Monitor:
    return L.Monitor(config.monitor)


def scheduler(config, optim: torch.optim.Optimizer, data: TrainingData, processes: runtime.Processes,
              watched: L.Monitor) -> L.Listener:
    if config.scheduler == "onecycle":
        return L.OneCycleScheduler(optim, [group["lr"] for group in optim.param_groups],    # each group its own peak
                                   config.max_train_epochs * len(data.loaders["train"]))
    if config.scheduler == "cosine":
        return L.CosineScheduler(optim, config.max_train_epochs)
    return L.PlateauScheduler(optim, max(1, math.ceil(config.lr_patience_epochs / config.epochs_per_eval)),
                              config.lr_decay_factor, watched)


def listeners(config, model: torch.nn.Module, optim: torch.optim.Optimizer, data: TrainingData,
              processes: runtime.Processes) -> List[L.Listener]:
    """In the order they run after a validation: log, TensorBoard, best weights, LR
    schedule, early stopping, checkpoint, progress."""
    prefix = model_prefix(len(data.class_map))
    watched = monitor(config)
    chosen: List[L.Listener] = [L.EpochLog()]
    if processes.main:
        chosen.append(L.TensorBoardWriter(config.summary_dir, prefix))
    chosen.append(L.BestWeights(model.state_dict(), watched))
    chosen.append(scheduler(config, optim, data, processes, watched))
    chosen.append(L.EarlyStopping(config.early_stopping_patience_epochs, config.epochs_per_eval, watched))
    if config.checkpoint_dir and processes.main:
        chosen.append(L.CheckpointWriter(CheckpointHandler(config.checkpoint_dir, prefix, config.keep_checkpoints)))
    chosen.append(L.Progress(not config.no_progress))
    return chosen


def step(config, device: torch.device, precision: runtime.Precision, memory_format: str) -> Step:
    scaler: Optional[torch.amp.GradScaler] = torch.amp.GradScaler(device.type) if precision.scaler else None
    return Step(precision, config.grad_clip, runtime.MEMORY_FORMATS[memory_format], scaler, config.mixup or None)
