"""Search by example: the stored windows most similar to a query, by cosine similarity.

A query is a clip file (embedded with the store's model; its windows averaged), a
stretch of a stored recording ``RECORDING:START-END`` (seconds; split at the last ``:``;
the stored windows it overlaps averaged; a recording not in the store is read from disk
and embedded), or a selection of a Raven table ``TABLE.txt#SELECTION``. Every stored
window is compared (brute force over memory-mapped float16 vectors: float16 products
first, the float32 similarity of those near the best; see ``similarities``); the
best windows are merged where neighbours of one recording touch (a selection keeps its
best similarity), and the query's own windows are left out.
"""

import os
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from embedding.store import Store, StoreError

CHUNK = 65536


def as_tensor_half(array: np.ndarray) -> torch.Tensor:
    """A tensor over (read-only, memory-mapped) float16 vectors, without a copy."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(array))


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 tensor of (read-only, memory-mapped) float16 vectors."""
    return as_tensor_half(array).float()


@dataclass
class Hit:
    recording: str
    source: str
    begin: float
    end: float
    similarity: float
    channel: int = 1


def unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def query_vector(vectors: np.ndarray) -> np.ndarray:
    """One direction for several windows: the mean of their unit vectors, unit length."""
    if not len(vectors):
        raise StoreError("the query covers no window")
    return unit(unit(vectors).mean(axis=0))


# |approximate - float32 cosine| on one window: the query rounded to float16 (2^-11), the
# product summed in float32 (512 terms: 2^-15) and rounded to float16 (2^-11), each
# relative to |v| |q|, so at most 2^-10 + 2^-15 ~ 1.0e-3; 2.5 times that for margin.
APPROXIMATION = 2.5e-3


def approximate(part, query_half: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of every window from float16 products (float16 in, float32
    sums: no float32 copy of the vectors is made); non-finite where a product overflows."""
    values = [as_tensor_half(chunk[first:first + CHUNK]) @ query_half
              for chunk in part.chunks for first in range(0, len(chunk), CHUNK)]
    if not values:
        return torch.zeros(0)
    return torch.cat(values).float() / torch.from_numpy(part.norms).clamp_min(1e-12)


def exact(part, rows: np.ndarray, query: torch.Tensor) -> torch.Tensor:
    """The float32 cosine similarity of the given windows."""
    block = as_tensor(part.take(rows))
    return (block @ query) / torch.from_numpy(part.norms[rows]).clamp_min(1e-12)


def similarities(store: Store, query: np.ndarray, keep: int, exclude: Optional[Tuple[str, float, float]] = None
                 ) -> List[Hit]:
    """The ``keep`` best windows of the whole store by float32 cosine similarity.

    Brute force in two steps: every window's similarity from float16 products (fast:
    the vectors stay float16), then the float32 similarity of every window within
    2 x ``APPROXIMATION`` of the ``keep``-th best, which holds the float32 best ``keep``:
    each of them scores at least the keep-th float32 value - e approximately, and the
    keep-th approximate value is at most that + e. Where the float16 products stray
    further than ``APPROXIMATION`` on the windows recomputed, all are computed in float32."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    parts = [p for p in store.parts() if len(p.starts)]
    if not parts or keep <= 0:
        return []
    approx, skip = [], []
    for part in parts:
        sims = approximate(part, q.half())
        sims[~torch.isfinite(sims)] = float("inf")           # overflowed: always recomputed
        left_out = torch.zeros(len(sims), dtype=torch.bool)
        if exclude is not None and exclude[0] == part.recording:
            left_out = torch.from_numpy((part.starts < exclude[2]) & (part.ends > exclude[1]))
        approx.append(sims)
        skip.append(left_out)
    finite = torch.cat([s[torch.isfinite(s) & ~o] for s, o in zip(approx, skip)])
    bar = float(torch.topk(finite, keep).values[-1]) - 2 * APPROXIMATION if len(finite) >= keep else -float("inf")
    best: List[Hit] = []
    strayed = 0.0
    for part, sims, left_out in zip(parts, approx, skip):
        rows = np.flatnonzero(((sims >= bar) & ~left_out).numpy())
        if not len(rows):
            continue
        values = exact(part, rows, q)
        close = torch.isfinite(sims[rows])
        if close.any():
            strayed = max(strayed, float((values[close] - sims[rows][close]).abs().max()))
        best += [Hit(part.recording, part.source, float(part.starts[i]), float(part.ends[i]), float(v),
                     int(part.channels[i])) for i, v in zip(rows.tolist(), values.tolist())]
    if strayed > APPROXIMATION:                              # this CPU's float16 products: not as assumed
        return everything_float32(parts, q, keep, exclude)
    return sorted(best, key=lambda h: -h.similarity)[:keep]


def everything_float32(parts, q: torch.Tensor, keep: int, exclude) -> List[Hit]:
    best: List[Hit] = []
    for part in parts:
        sims = torch.cat([as_tensor(chunk[first:first + CHUNK]) @ q
                          for chunk in part.chunks for first in range(0, len(chunk), CHUNK)])
        sims /= torch.from_numpy(part.norms).clamp_min(1e-12)
        if exclude is not None and exclude[0] == part.recording:
            sims[torch.from_numpy((part.starts < exclude[2]) & (part.ends > exclude[1]))] = -2.0
        top = torch.topk(sims, min(keep, len(sims)))
        best += [Hit(part.recording, part.source, float(part.starts[i]), float(part.ends[i]), float(s),
                     int(part.channels[i])) for s, i in zip(top.values.tolist(), top.indices.tolist()) if s > -2]
        best = sorted(best, key=lambda h: -h.similarity)[:keep]
    return best


def merge(hits: List[Hit]) -> List[Hit]:
    """Windows of one recording that touch or overlap become one selection."""
    merged: List[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.recording, h.channel, h.begin)):
        last = merged[-1] if merged else None
        if last and last.recording == hit.recording and last.channel == hit.channel and hit.begin <= last.end:
            last.end = max(last.end, hit.end)
            last.similarity = max(last.similarity, hit.similarity)
        else:
            merged.append(Hit(hit.recording, hit.source, hit.begin, hit.end, hit.similarity, hit.channel))
    return sorted(merged, key=lambda h: -h.similarity)


def search(store: Store, query: np.ndarray, top: int, exclude=None) -> List[Hit]:
    """The ``top`` best selections."""
    per_selection = max(1, int(round(float(store.description["window"]) / float(store.description["hop"]))))
    return merge(similarities(store, query, top * (per_selection + 1) * 2, exclude))[:top]


# ---------------------------------------------------------------------- queries
def stored_stretch(store: Store, recording: str, begin: float, end: float):
    """The stored windows inside the stretch (those that overlap it most where none lies
    inside: a stretch shorter than a window)."""
    part = store.find(recording)
    overlap = np.minimum(part.ends, end) - np.maximum(part.starts, begin)
    inside = (part.starts >= begin - 1e-6) & (part.ends <= end + 1e-6)
    if not inside.any() and (overlap > 0).any():
        inside = overlap >= overlap.max() - 1e-6
    if not inside.any():                 # between windows: the nearest one
        middle = (begin + end) / 2
        inside = np.zeros(len(part.starts), dtype=bool)
        inside[int(np.argmin(np.abs((part.starts + part.ends) / 2 - middle)))] = True
    return query_vector(part.vectors[inside]), (part.recording, begin, end)


def embed_audio(store: Store, path: str, model_path: Optional[str] = None) -> np.ndarray:
    """The windows of an audio file, embedded with the store's model."""
    from prediction.core import Predictor, PredictionModel

    model_path = model_path or store.description["model"].get("file")
    if not model_path or not os.path.isfile(model_path):
        raise StoreError(f"a query from audio needs the store's model ({store.description['model']}): pass "
                         "--model_path")
    from embedding.store import file_sha256

    if store.description["model"].get("sha256") not in (None, file_sha256(model_path)):
        raise StoreError(f"{model_path} is not the model the store {store.root} was made with")
    predictor = Predictor([PredictionModel.open(model_path, memory_format="contiguous")],
                          float(store.description["window"]), float(store.description["hop"]), prefetch=False)
    return np.concatenate([b.pooled.half().float().numpy() for b in predictor.stream(path, pooled=True)])


def table_selection(text: str):
    """``TABLE.txt#N`` -> (recording, begin, end) of selection N."""
    import csv

    path, _, number = text.rpartition("#")
    if not os.path.isfile(path):
        raise StoreError(f"--query {text}: no table {path}")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    header = {name.strip().lower(): i for i, name in enumerate(rows[0])} if rows else {}
    for row in rows[1:]:
        if "selection" in header and row[header["selection"]].strip() == number.strip():
            begin, end = float(row[header["begin time (s)"]]), float(row[header["end time (s)"]])
            for column in ("begin path", "begin file"):
                if column in header and row[header[column]].strip():
                    if "file offset (s)" in header and row[header["file offset (s)"]].strip():
                        offset = float(row[header["file offset (s)"]])
                        begin, end = offset, offset + end - begin
                    return row[header[column]].strip(), begin, end
            return os.path.basename(path).split(".", 1)[0], begin, end
    raise StoreError(f"--query {text}: {path} has no selection {number}")


def resolve_query(store: Store, text: str, model_path: Optional[str] = None):
    """``(query vector, the stretch to leave out or None)`` of a query text."""
    if "#" in text and os.path.isfile(text.rpartition("#")[0]):
        recording, begin, end = table_selection(text)
        return stored_stretch(store, recording, begin, end)
    if os.path.isfile(text):
        return query_vector(embed_audio(store, text, model_path)), None
    recording, sep, span = text.rpartition(":")
    if not sep or "-" not in span:
        raise StoreError(f"--query {text}: neither a file, nor RECORDING:START-END, nor TABLE.txt#SELECTION")
    try:
        begin, end = (float(v) for v in span.split("-", 1))
    except ValueError:
        raise StoreError(f"--query {text}: START-END must be seconds, e.g. rec.wav:12.5-13.0") from None
    try:
        return stored_stretch(store, recording, begin, end)
    except StoreError:
        if not os.path.isfile(recording):
            raise
    import soundfile as sf

    from data.snippets import read_snippet

    samples, rate, _ = read_snippet(recording, begin, end, 0.0)
    with tempfile.TemporaryDirectory() as folder:
        clip = os.path.join(folder, "query.wav")
        sf.write(clip, samples, rate)
        return query_vector(embed_audio(store, clip, model_path)), None


def hits_table(hits: List[Hit], data_opts: dict) -> str:
    """A Raven table of the hits: times within each file, ``Begin File``, ``Begin Path``,
    ``File Offset (s)`` and ``Similarity``."""
    from evaluation.raven import HEADER_COLUMNS, tsv

    columns = HEADER_COLUMNS + ["Begin File", "Begin Path", "File Offset (s)", "Similarity"]
    rows = [[str(n), "Spectrogram_1", str(h.channel), str(round(h.begin, 3)), str(round(h.end, 3)),
             str(data_opts.get("fmin", "")), str(data_opts.get("fmax", "")), "similar", " ",
             os.path.basename(h.recording), h.recording, str(round(h.begin, 3)), f"{h.similarity:.4f}"]
            for n, h in enumerate(hits, start=1)]
    return tsv(columns, rows)


def run_search(args) -> int:
    import logging

    from utils.atomic import atomic_write_text

    store = Store.existing(args.store)
    query, exclude = resolve_query(store, args.query, args.model_path)
    hits = search(store, query, args.top, exclude)
    atomic_write_text(args.output, hits_table(hits, store.description.get("data_opts", {})))
    logging.getLogger("EMBED").info(f"{len(hits)} selection(s) most like {args.query} written to {args.output}")
    return 0
