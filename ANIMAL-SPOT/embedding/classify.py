"""A head applied to the stored windows of an embedding store, as a source of the one
prediction run (``prediction.run``): ``embed.py classify`` writes the logs and tables
``predict.py`` would write, without computing a spectrogram; the review's active learning
reads the same probabilities."""

import logging
from typing import Iterator, List, Optional

import numpy as np
import torch

from .search import as_tensor
from .store import Store, StoreError
from ..models.model_file import load_model
from ..prediction.core import WindowBatch
from ..prediction.decisions import DecisionRule
from ..prediction.folder import prepare_folder
from ..prediction.records import RunFile, resolved_path
from ..data.sources import output_name
from ..prediction.run import Decisions, Layout, Opened, run_recordings
from ..prediction.sinks import LogSink, RunInfo
from ..prediction.tables import CombinedRavenSink, RavenSink
from ..utils.atomic import make_folder

log = logging.getLogger("EMBED")
BATCH = 4096


class StoredSource:
    """The recordings of a store, each window's probabilities from ``head`` (a
    ``Classifier``) on its stored vector."""

    def __init__(self, store: Store, head):
        self.store, self.head = store, head.eval()

    def probabilities(self, vectors: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([torch.softmax(self.head.head(as_tensor(vectors[i:i + BATCH])).float(), dim=1)
                              for i in range(0, len(vectors), BATCH)]) if len(vectors) else torch.zeros(0, 2)

    def batches(self, part) -> Iterator[WindowBatch]:
        for first in range(0, len(part.starts), BATCH):
            last = min(first + BATCH, len(part.starts))
            starts = [float(v) for v in part.starts[first:last]]
            ends = [float(v) for v in part.ends[first:last]]
            yield WindowBatch(first, starts, ends, [None] * len(starts), [None] * len(starts),
                              self.probabilities(part.vectors[first:last]), None, None)

    def open(self, recording: str) -> Opened:
        part = self.store.find(recording)
        meta = part.meta
        sr = meta.sr or int(self.store.description.data_opts.get("sr") or 1)      # parts before sr was kept
        return Opened(meta.seconds, meta.n_samples, meta.step, meta.rate, meta.channels, len(part.starts), sr,
                      [(None, self.batches(part))], relative=part.recording,
                      given=meta.given or meta.source or part.recording)


def check_head(loaded, store: Store, path: str) -> None:
    dim = loaded.model.classifier.model_opts().get("input_channels")
    if dim != store.description.dim:
        raise StoreError(f"{path}: its head takes {dim} features, the store holds {store.description.dim}")
    if loaded.spec.data_opts != store.description.data_opts:
        raise StoreError(f"{path} was made for other spectrogram settings than the store {store.root}")


def classify_store(store: Store, model_path: str, output_dir: str, threshold: Optional[float] = None,
                   raven: bool = False, overwrite: bool = False) -> List[str]:
    """A head applied to every stored window, writing the logs (and Raven tables) that
    predict.py would write with that model file; returns the recordings that failed."""
    loaded = load_model(model_path)
    check_head(loaded, store, model_path)
    rule = DecisionRule(threshold) if threshold is not None else DecisionRule.from_model(loaded.spec)
    info = RunInfo([model_path], loaded.class_map, loaded.spec.data_opts, store.description.window,
                   store.description.hop, rule, min_max_norm=loaded.spec.min_max_norm, output_dir=output_dir)
    sinks: List = [LogSink(info)] + ([RavenSink(info), CombinedRavenSink(info)] if raven else [])
    recordings = sorted(store.recordings())
    make_folder(output_dir)
    run = RunFile(input_file=resolved_path(store.root), recordings=tuple(recordings),
                  outputs=tuple(output_name(r) for r in recordings), threshold=rule.threshold,
                  thresholds=rule.thresholds, temperature=rule.temperature, classes=loaded.class_map.to_dict(),
                  data_opts=loaded.spec.data_opts, raven=raven, models=(resolved_path(model_path),),
                  sequence_len=info.sequence_len,
                  hop=info.hop, made_by="embed.py classify")
    prepare_folder(output_dir, run, overwrite, log)       # the folder is read back by the head's own rule
    failed = run_recordings(recordings, StoredSource(store, loaded.model.classifier), Layout("", output_dir), sinks,
                            Decisions(rule, loaded.class_map), overwrite=True)
    for sink in sinks:
        sink.close()
    return failed
