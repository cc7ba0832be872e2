"""Few-shot heads on stored embeddings: labelled examples in, a normal model file out.

Examples: the windows of the store labelled by
* review journals (``review_journal.jsonl``): correct -> the model's label, other -> the
  reviewer's, wrong -> noise; unsure and skipped answers are left out;
* Raven tables (files or folders): a window takes the label of a selection it overlaps by
  at least half of the shorter of the two; windows of an annotated recording that no
  selection touches are ``noise``; windows that touch a selection by less are left out;
* folders of labelled clips (ANIMAL-SPOT names): every window of a clip, embedded with
  the store's model, takes the clip's class.

The head (a linear layer, or one hidden layer with ``--mlp``) is fitted full-batch with
L-BFGS on the standardised float16 vectors, with inverse-frequency class weights and an
L2 penalty chosen by cross-validation over whole recordings, and validated on whole
recordings held out (about a fifth; with one recording, its last fifth in time, with a
warning); it reports per-class figures with intervals as training does, and is
calibrated (temperature, per-class thresholds, unknown score) on the validation windows.
The saved head is then refitted on every example (a class may be labelled only in the
held-out recordings).
The model file holds the embedding model's encoder and the head (``round_float16``: the
pooled features are rounded to float16 first, as the store holds them), so
``predict.py``, ensembles, thresholds, Raven tables, ONNX export and the review page use
it unchanged; ``classify`` applies it to the store without computing spectrograms.
"""

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.filenames import class_name, find_audio_files
from .search import embed_audio
from .encoders import store_model
from .store import Store
from ..evaluation.calibration import calibrate, fit_unknown
from ..evaluation.metrics import PassMetrics
from ..evaluation.raven import find_tables, read_table
from ..models.classifier import Classifier
from ..models.model_file import ModelSpec, provenance, save_model
from ..utils.atomic import atomic_write_text
from ..utils.classmap import ClassMap

log = logging.getLogger("EMBED")
NOISE = "noise"
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)     # L2 penalties on standardised features (choose_weight_decay)
DEFAULT_DECAY, DECAY_FOLDS = 0.1, 3


@dataclass
class Examples:
    vectors: np.ndarray               # (n, dim) float32 (float16 values)
    labels: List[str]
    groups: List[str]                 # the recording (or clip) of each example
    times: np.ndarray                 # window starts (time blocks of a single recording)


# ----------------------------------------------------------------------- labels
def covered(starts, ends, selections) -> Tuple[np.ndarray, np.ndarray]:
    """Per window: the label index it takes (-1 none), and whether it touches any selection."""
    label = np.full(len(starts), -1)
    touched = np.zeros(len(starts), dtype=bool)
    for index, (begin, end) in enumerate(selections):
        shared = np.minimum(ends, end) - np.maximum(starts, begin)
        touch = shared > 0
        touched |= touch
        enough = touch & (shared >= 0.5 * np.minimum(ends - starts, end - begin) - 1e-9)
        label[enough & (label == -1)] = index
    return label, touched


def _key(recording: str) -> str:
    return os.path.splitext(recording)[0]


def store_examples(store: Store, selections: Dict[str, List[Tuple[float, float, str]]], noise_elsewhere: bool
                   ) -> Examples:
    """Windows of the store labelled by ``selections`` (recording key -> selections)."""
    wanted = {_key(k): v for k, v in selections.items()}
    vectors, labels, groups, times = [], [], [], []
    found = set()
    for part in store.parts():
        key = _key(part.recording)
        rows = wanted.get(key, wanted.get(os.path.basename(key)))
        if rows is None:
            continue
        found.add(key)
        index, touched = covered(part.starts, part.ends, [(b, e) for b, e, _ in rows])
        for i in range(len(part.starts)):
            if index[i] >= 0:
                label = rows[index[i]][2]
            elif noise_elsewhere and not touched[i]:
                label = NOISE
            else:
                continue
            vectors.append(part.vectors[i])
            labels.append(label)
            groups.append(key)
            times.append(part.starts[i])
    missing = sorted(set(wanted) - found - {os.path.basename(k) for k in found})
    if missing:
        log.warning(f"labelled recording(s) not in the store {store.root} (left out): {', '.join(missing[:5])}"
                    + (" ..." if len(missing) > 5 else ""))
    return Examples(np.asarray(vectors, dtype=np.float32).reshape(-1, store.description.dim), labels, groups,
                    np.asarray(times))


def clip_examples(store: Store, folder: str, model_path: Optional[str]) -> Examples:
    vectors, labels, groups = [], [], []
    for relative in find_audio_files(folder):
        windows = embed_audio(store, os.path.join(folder, relative), model_path)
        vectors += list(windows)
        labels += [class_name(relative)] * len(windows)
        groups += [relative] * len(windows)
    return Examples(np.asarray(vectors, dtype=np.float32).reshape(-1, store.description.dim), labels, groups,
                    np.zeros(len(labels)))


def gather(store: Store, sources: Sequence[str], model_path: Optional[str],
           reviewed: Optional[Dict[str, List[Tuple[float, float, str]]]] = None) -> Examples:
    """Every example of the given tables and clip folders, and of ``reviewed`` selections
    (review answers: the windows they cover, no noise elsewhere)."""
    parts = [store_examples(store, reviewed, noise_elsewhere=False)] if reviewed else []
    for source in sources:
        if os.path.isdir(source) and not find_tables(source) and find_audio_files(source):
            parts.append(clip_examples(store, source, model_path))
        elif os.path.exists(source):
            tables = find_tables(source)
            if not tables:
                raise ValueError(f"--labels {source}: no Raven selection tables (*.selections.txt), review journals "
                                 "(review_journal.jsonl) or labelled clips (ANIMAL-SPOT names) in it")
            selections: Dict[str, List[Tuple[float, float, str]]] = {}
            for table in tables:
                for event in read_table(table):
                    selections.setdefault(event.recording, []).append((event.begin, event.end, event.label))
            parts.append(store_examples(store, selections, noise_elsewhere=True))
        else:
            raise FileNotFoundError(f"--labels {source}: no such file or folder")
    vectors = np.concatenate([p.vectors for p in parts]) if parts else np.zeros((0, store.description.dim))
    return Examples(vectors, [l for p in parts for l in p.labels], [g for p in parts for g in p.groups],
                    np.concatenate([p.times for p in parts]) if parts else np.zeros(0))


def class_map_of(labels: Sequence[str]):
    """The head's classes: with one call type and noise a binary detector named after it."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError(f"a head needs examples of at least two classes (found {', '.join(names) or 'none'}); "
                         "annotate noise too, or use tables (unselected windows become noise)")
    if len(names) == 2 and NOISE in names:
        call = next(n for n in names if n != NOISE)
        return ClassMap.from_dict({NOISE: 0, call: 1})
    if len(names) == 2:
        raise ValueError(f"examples of {names[0]} and {names[1]} but no noise: a head of two classes is a detector "
                         "of one call type against noise; label noise too (with tables: windows that touch no "
                         "selection are noise)")
    return ClassMap.from_names(names)


def validation_split(examples: Examples, seed: int) -> np.ndarray:
    """A mask of the validation examples: about a fifth of the recordings, or, with one
    recording, its last fifth in time."""
    groups = sorted(set(examples.groups))
    if len(groups) == 1:
        log.warning("All examples come from one recording: validating on its last fifth in time, which says "
                    "little about other recordings")
        cut = np.quantile(examples.times, 0.8) if len(examples.times) else 0.0
        return examples.times >= cut
    rng = random.Random(seed)
    rng.shuffle(groups)
    held = set(groups[:max(1, round(len(groups) / 5))])
    return np.asarray([g in held for g in examples.groups])


# ------------------------------------------------------------------------- fitting
def head_module(dim: int, classes: int, hidden: Optional[int], pooling: str = "avg"):
    opts = {"input_channels": dim, "pooling": pooling, "num_classes": classes, "head": "mlp" if hidden else "linear",
            "round_float16": True}
    if hidden:
        opts["hidden"] = int(hidden)
    return Classifier(opts)


def fit_head(x: np.ndarray, y: np.ndarray, classes: int, hidden: Optional[int] = None, epochs: int = 300,
             weight_decay: float = DEFAULT_DECAY, seed: int = 0, pooling: str = "avg"):
    """The head fitted on ``x`` (float16 values) with inverse-frequency class weights and an
    L2 penalty ``weight_decay`` on the standardised features (each feature's mean and
    spread over ``x`` are folded into the first layer afterwards, so the module takes the
    stored vectors as they are)."""
    torch.manual_seed(seed)
    head = head_module(x.shape[1], classes, hidden, pooling)
    head.round_float16 = False                    # rounded once here, not in every one of LBFGS's passes
    inputs = torch.from_numpy(np.asarray(x, dtype=np.float32)).half().float()
    mean, scale = inputs.mean(dim=0), inputs.std(dim=0).clamp_min(1e-6)
    inputs = (inputs - mean) / scale               # standardised; folded into the first layer at the end
    targets = torch.from_numpy(np.asarray(y))
    counts = torch.bincount(targets, minlength=classes).double()
    weights = torch.where(counts > 0, counts.sum() / (classes * counts.clamp_min(1)), torch.zeros_like(counts))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights.float())
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=epochs, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(head.head(inputs), targets)
        loss = loss + weight_decay * sum((p ** 2).sum() for n, p in head.named_parameters() if n.endswith("weight"))
        loss.backward()
        return loss
    optimizer.step(closure)
    first = head.hidden if hidden else head.linear
    with torch.no_grad():                         # W (z - mean) / scale + b  =  (W / scale) z + (b - W mean / scale)
        first.bias -= first.weight @ (mean / scale)
        first.weight /= scale
    head.round_float16 = True
    return head.eval()




def choose_weight_decay(examples: Examples, y: np.ndarray, classes: int, hidden: Optional[int], epochs: int,
                        seed: int, pooling: str) -> Tuple[float, Dict[float, float]]:
    """The weight decay of ``WEIGHT_DECAYS`` with the lowest held-out ``balanced_log_loss``
    over up to ``DECAY_FOLDS`` folds of whole recordings (a held-out example counts only
    where its class has training examples in its fold); ``DEFAULT_DECAY`` with a single
    recording."""
    groups = np.asarray(examples.groups)
    names = sorted(set(examples.groups))
    if len(names) < 2:
        return DEFAULT_DECAY, {}
    random.Random(seed).shuffle(names)
    folds = [np.isin(groups, names[k::DECAY_FOLDS]) for k in range(min(DECAY_FOLDS, len(names)))]
    losses = {}
    for decay in WEIGHT_DECAYS:
        logits, truth = [], []
        for held in folds:
            head = fit_head(examples.vectors[~held], y[~held], classes, hidden, epochs, decay, seed, pooling)
            seen = held & np.isin(y, np.unique(y[~held]))
            logits.append(logits_of(head, examples.vectors[seen]))
            truth.append(y[seen])
        truth = np.concatenate(truth)
        losses[decay] = balanced_log_loss(np.concatenate(logits), truth) if len(truth) else float("inf")
    best = min(losses, key=losses.get)
    return (best if np.isfinite(losses[best]) else DEFAULT_DECAY), losses


def balanced_log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """The mean over the classes present of their examples' mean -log p(true class)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    picked = -log_p[np.arange(len(y)), y]
    return float(np.mean([picked[y == c].mean() for c in np.unique(y)]))


def logits_of(head, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    out = []
    with torch.no_grad():
        for first in range(0, len(x), batch):
            out.append(head.head(torch.from_numpy(np.asarray(x[first:first + batch], dtype=np.float32))))
    return torch.cat(out).double().numpy() if out else np.zeros((0, head.linear.out_features))


@dataclass(frozen=True)
class HeadSettings:
    """How a head is fitted (``embed.py fit``'s options)."""

    hidden: Optional[int] = None            # units of a hidden layer (None: linear)
    epochs: int = 300                       # L-BFGS iterations
    weight_decay: Optional[float] = None    # None: chosen by cross-validation over recordings
    seed: int = 0


def fit_model_file(store: Store, examples: Examples, out: str, settings: HeadSettings = HeadSettings(),
                   labels: Sequence[str] = (), model_path: Optional[str] = None) -> dict:
    """A head fitted on ``examples`` of the store, validated on held-out recordings and
    calibrated, saved as a normal model file ``out`` (with ``<out>.metrics.json``); returns
    the summary written there."""
    started = time.time()
    class_map = class_map_of(examples.labels)
    names = class_map.names
    y = np.asarray([class_map.index(label) for label in examples.labels])
    val = validation_split(examples, settings.seed)
    train = ~val
    if not train.any() or not val.any():
        raise ValueError("too few labelled recordings to hold some out for validation")
    base = store_model(store, model_path)
    pooling = base.spec.classifier_opts.get("pooling", "avg")
    decay = settings.weight_decay
    if decay is None:
        decay, losses = choose_weight_decay(examples, y, len(names), settings.hidden, settings.epochs, settings.seed,
                                            pooling)
        if losses:
            log.info(f"Weight decay chosen by {len(losses)}-candidate cross-validation over recordings: " + ", ".join(
                f"{d:g} (held-out loss {v:.3f})" for d, v in losses.items()) + f" -> {decay:g}")
    fit = lambda rows: fit_head(examples.vectors[rows], y[rows], len(names), settings.hidden, settings.epochs, decay,
                                settings.seed, pooling)
    head = fit(train)
    val_logits = logits_of(head, examples.vectors[val])
    metrics = PassMetrics(len(names), keep_samples=True)
    metrics.update(torch.from_numpy(y[val]), torch.from_numpy(val_logits.argmax(axis=1)))
    counts = {n: int((y[train] == i).sum()) for i, n in enumerate(names)}
    log.info(f"Head fitted on {int(train.sum())} windows ({counts}) in {time.time() - started:.1f} s; validation on "
             f"{int(val.sum())} windows of {len(set(np.asarray(examples.groups)[val]))} held-out recording(s):")
    for line in metrics.table(names, intervals=True):
        log.info("  " + line)
    calibration = calibrate(val_logits, y[val], names, class_map.noise_index)
    unknown = fit_unknown("centroid_distance", 0.05, examples.vectors[val], val_logits, examples.vectors[train],
                          y[train])
    # the saved head learns from every example (a class may be labelled only in the held-out recordings); the
    # validation figures and the calibration are those of the head fitted without them
    head = fit(np.ones(len(y), dtype=bool))
    spec = ModelSpec(dict(base.spec.encoder_opts), head.model_opts(), dict(base.spec.data_opts), class_map.to_dict(),
                     dict(base.spec.train_opts, head_of=store.description.model, head_labels=list(labels),
                          head_examples=int(len(y)), min_max_norm=base.spec.min_max_norm),
                     calibration["thresholds"], calibration["temperature"], provenance(), unknown)
    model = spec.build()
    model.encoder.load_state_dict(base.model.encoder.state_dict())
    model.classifier.load_state_dict(head.state_dict())
    save_model(out, model, spec)
    summary = {"classes": names, "train_windows": counts, "validation": metrics.summary(names, intervals=True),
               "calibration": calibration, "weight_decay": decay, "seconds": round(time.time() - started, 2)}
    atomic_write_text(os.path.splitext(out)[0] + ".metrics.json", json.dumps(summary, indent=1, default=str))
    log.info(f"Written {out} (a normal model file: predict.py and review.py take it)")
    return summary
