"""What a training run leaves: calibration and the unknown score on the best weights'
validation logits, the model file, ``metrics.json``, ``run.json`` (the run's options, for
``--config``) and the model card (main process)."""

import dataclasses
import json
import logging
import os
import time

import torch

from . import factories
from . import data as training_data
from ..data.features import seq_frames
from ..data.split import split_hash
from ..evaluation.calibration import calibrate, detection_figures, fit_unknown, softmax, unknown_report
from ..evaluation.metrics import json_number, macro_roc_auc, pct
from ..data.recording import AudioOptions
from ..models import model_card
from ..models.model_file import ModelSpec, provenance, save_jit_model, save_model
from .trainer import Trainer
from .data import TrainingData
from ..utils import runtime
from ..utils.atomic import atomic_write_text


def train_options(config, processes: runtime.Processes, seed: int, precision: runtime.Precision) -> dict:
    """trainOpts of the model file and ``options`` of metrics.json: every option by its
    flag name, the seed actually used, and what follows from the options."""
    options = config.to_dict()
    options.update(seed=seed, seq_frames=seq_frames(config.sequence_len, config.sr, config.hop_length),
                   processes=processes.world, lr_effective=factories.effective_lr(config, processes),
                   precision=precision.name)
    return options


def finish(config, trainer: Trainer, data: TrainingData, spec: ModelSpec, test, seed: int, precision,
           processes, started: float, log: logging.Logger) -> None:
    """Calibration and the unknown score on the best weights' validation logits, then the
    model file, metrics.json and the model card (main process)."""
    class_map = data.class_map
    best = trainer.best_weights()
    if best is not None and best.logits is not None:
        val_logits, val_labels, val_features = best.logits, best.labels, best.features
    else:                                   # no validation improved on the start, or an older checkpoint
        val_logits, val_labels, val_features = trainer.evaluate(data.single_loaders["val"])
    calibration = calibrate(val_logits, val_labels, class_map.names, class_map.noise_index, config.target_precision)
    calibration["test"] = detection_figures(softmax(test.logits, calibration["temperature"]), test.labels,
                                            class_map.names, calibration["thresholds"])
    log.info(f"Calibration on validation: temperature {calibration['temperature']:.3f}, expected calibration "
             f"error {calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}; thresholds "
             + ", ".join(f"{k} {v:.3f}" for k, v in calibration["thresholds"].items()))
    unknown, unknown_test = fit_unknown_answer(config, trainer, data, val_logits, val_features, test, log)
    spec = dataclasses.replace(spec, train_opts=train_options(config, processes, seed, precision),
                               thresholds=calibration["thresholds"], temperature=calibration["temperature"],
                               unknown=unknown, provenance=provenance(split_hash=split_hash(data.split)))
    path = os.path.join(config.model_dir, "ANIMAL-SPOT.pk")
    metrics = {"model": path, "classes": class_map.names, "class_map": class_map.to_dict(),
               "test": {**test.metrics.summary(class_map.names, intervals=True),
                        "macro_roc_auc": json_number(macro_roc_auc(softmax(test.logits), test.labels))},
               "best_val": {"epoch": best.epoch, "monitor": best.monitor.name, best.monitor.name: best.metric,
                            **(best.summary or {})} if best else None,
               "last_val": trainer.results["val"].metrics.summary(class_map.names) if "val" in trainer.results
               else None,
               "calibration": calibration,
               "unknown": {**{k: v for k, v in unknown.items() if k != "centroids"}, "test": unknown_test},
               "options": spec.train_opts, "seed": seed,
               "seconds": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "provenance": spec.provenance}
    spec = dataclasses.replace(spec, card=model_card.card_data(spec, metrics, training_data.card_summary(data),
                                                               runtime.machine_description()))
    save(config, trainer.model, spec, data, path, log)
    atomic_write_text(os.path.join(config.model_dir, "metrics.json"), json.dumps(metrics, indent=2, default=str))
    atomic_write_text(os.path.join(config.model_dir, "run.json"), json.dumps(spec.train_opts, indent=1, default=str))
    atomic_write_text(os.path.join(config.model_dir, "MODEL_CARD.md"), model_card.render(spec))


def fit_unknown_answer(config, trainer: Trainer, data: TrainingData, val_logits, val_features, test, log):
    """The unknown score's threshold on validation (centroids from up to 256 training
    clips per class, without augmentation), and how often known test clips are rejected."""
    score = config.unknown_score
    train_features = train_labels = None
    if score == "centroid_distance":
        train_logits, train_labels, train_features = trainer.evaluate(training_data.plain_loader(config, data))
        if train_features is None or val_features is None or test.features is None:
            log.warning("No pooled features from this network (compiled?): the unknown answer uses max_probability")
            score = "max_probability"
    unknown = fit_unknown(score, config.unknown_false_rejection, val_features, val_logits, train_features,
                          train_labels)
    report = unknown_report(unknown, test.features, test.logits)
    log.info(f"Unknown answer ({unknown['score']}): threshold {unknown['threshold']:.4f} rejects "
             f"{100 * config.unknown_false_rejection:.1f} % of known validation clips; on test "
             f"{pct(report['rejected_share'])} of known clips are called unknown")
    return unknown, report


def save(config, model, spec: ModelSpec, data: TrainingData, path: str, log) -> None:
    os.makedirs(config.model_dir, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    if config.jit_save:
        audio = isinstance(data.options, AudioOptions)
        example = torch.rand(1, 1, data.frames) if audio else torch.rand(1, 1, data.frames, data.options.input_bins)
        save_jit_model(path, model, example, spec, data.options.jit_description(spec.classes, config.sequence_len))
        log.debug(f"Model successfully saved via torch jit: {path}")
    else:
        save_model(path, model, spec)
        log.debug(f"Model successfully saved via torch save: {path}")
