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

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch

from ..data.snippets import read_snippet
from .encoders import store_predictor_model
from .store import Store, StoreError
from ..evaluation.raven import HEADER_COLUMNS, read_rows, tsv
from ..prediction.core import Predictor
from ..utils.atomic import atomic_write_text

CHUNK = 65536


def as_tensor_half(array: np.ndarray) -> torch.Tensor:
    """A tensor over (read-only, memory-mapped) float16 vectors, without a copy."""
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


TINY = 2.0 ** -14     # vectors shorter than this are always recomputed in float32 (see error_bound)


def error_bound(dim: int) -> float:
    """The most ``cosines`` with a float16 query can differ from the float32 cosine of a
    window of length |v| >= ``TINY``, relative to |v| |q| (|q| = 1): the query rounded to
    float16 (2^-11 relative, and 2^-25 absolute per component below float16's normal
    range: at most sqrt(dim) 2^-25 in all), the products (exact in float32) summed in
    float32 (dim terms: dim 2^-24), the sum rounded to float16 (2^-11 relative, and 2^-25
    absolute where it falls below float16's normal range, which is 2^-11 of |v| at
    |v| = ``TINY``), and the float32 reference's own sum (dim 2^-24); about 1.5e-3 at 512
    dimensions. Shorter vectors are recomputed in float32, as are products that overflow."""
    return 2 ** -10 + 2 ** -11 + 2 * dim * 2 ** -24 + dim ** 0.5 * 2 ** -25


MARGIN = 2.5        # candidates tolerate errors up to MARGIN x the bound; a larger observed error falls back
SAMPLE = 1024       # windows spread over the store, recomputed too, so the error check is not only at the top


def cosines(part, query: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of every window, from products in the query's precision:
    a float16 query multiplies the stored vectors as they are (float32 sums, no float32
    copy; non-finite where a product overflows), a float32 query converts them block by block."""
    convert = as_tensor_half if query.dtype == torch.float16 else as_tensor
    values = [convert(chunk[first:first + CHUNK]) @ query
              for chunk in part.chunks for first in range(0, len(chunk), CHUNK)]
    if not values:
        return torch.zeros(0)
    return torch.cat(values).float() / torch.from_numpy(part.norms).clamp_min(1e-12)


def exact(part, rows: np.ndarray, query: torch.Tensor) -> torch.Tensor:
    """The float32 cosine similarity of the given windows."""
    block = as_tensor(part.take(rows))
    return (block @ query) / torch.from_numpy(part.norms[rows]).clamp_min(1e-12)


def hit_of(part, row: int, similarity: float) -> Hit:
    return Hit(part.recording, part.source, float(part.starts[row]), float(part.ends[row]), similarity,
               int(part.channels[row]))


def left_out(part, exclude) -> np.ndarray:
    if exclude is None or exclude[0] != part.recording:
        return np.zeros(len(part.starts), dtype=bool)
    return (part.starts < exclude[2]) & (part.ends > exclude[1])


def similarities(store: Store, query: np.ndarray, keep: int, exclude: Optional[Tuple[str, float, float]] = None
                 ) -> List[Hit]:
    """The ``keep`` best windows of the whole store by float32 cosine similarity (``query``
    of unit length).

    Brute force in two passes over the parts (one open at a time): every window's
    similarity from float16 products (fast: the vectors stay float16), then the float32
    similarity of every window within 2 e of the ``keep``-th best approximate value (e =
    ``MARGIN`` x ``error_bound``), which holds the float32 best ``keep``: each of them scores
    at least the keep-th float32 value - e approximately, and the keep-th approximate value
    is at most that + e. Windows whose products overflow, and vectors shorter than ``TINY``,
    are always recomputed, and so is a sample spread over the store; where any recomputed window strays further than the
    bound (a CPU whose float16 products are not as assumed), all are computed in float32."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    if keep <= 0:
        return []
    approx, files = [], []
    for part in store.parts():
        if len(part.starts):
            sims = cosines(part, q.half())
            sims[~torch.isfinite(sims) | torch.from_numpy(part.norms < TINY)] = float("inf")   # always recomputed
            sims[torch.from_numpy(left_out(part, exclude))] = -float("inf")
            approx.append(sims)
            files.append(part.path)
    if not approx:
        return []
    bound = error_bound(len(q))
    every = torch.cat(approx)
    finite = every[torch.isfinite(every)]
    bar = float(torch.topk(finite, keep).values[-1]) - 2 * MARGIN * bound if len(finite) >= keep else -float("inf")
    sample = np.unique(np.linspace(0, len(every) - 1, min(SAMPLE, len(every))).astype(np.int64))
    best: List[Hit] = []
    strayed, first = 0.0, 0
    for path, sims in zip(files, approx):
        chosen = ((sims >= bar) & (sims > -float("inf"))).numpy()
        chosen[sample[(sample >= first) & (sample < first + len(sims))] - first] = True
        first += len(sims)
        rows = np.flatnonzero(chosen)
        if not len(rows):
            continue
        part = store.read(path)
        values = exact(part, rows, q)
        close = torch.isfinite(sims[rows]) & torch.isfinite(values)
        if close.any():
            strayed = max(strayed, float((values[close] - sims[rows][close]).abs().max()))
        outside = left_out(part, exclude)
        best += [hit_of(part, i, v) for i, v in zip(rows.tolist(), values.tolist())
                 if v == v and not outside[i]]                          # NaN (a broken vector): no hit
    if strayed > bound:
        return everything_float32(store, q, keep, exclude)
    return sorted(best, key=lambda h: -h.similarity)[:keep]


def everything_float32(store: Store, q: torch.Tensor, keep: int, exclude) -> List[Hit]:
    best: List[Hit] = []
    for part in store.parts():
        if not len(part.starts):
            continue
        sims = cosines(part, q)
        sims[torch.from_numpy(left_out(part, exclude)) | torch.isnan(sims)] = -2.0   # NaN: a broken vector
        top = torch.topk(sims, min(keep, len(sims)))
        best += [hit_of(part, i, s) for s, i in zip(top.values.tolist(), top.indices.tolist()) if s > -2]
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
    per_selection = max(1, int(round(store.description.window / store.description.hop)))
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
    predictor = Predictor([store_predictor_model(store, model_path)], store.description.window,
                          store.description.hop, prefetch=False)
    return np.concatenate([b.pooled.half().float().numpy() for b in predictor.stream(path, pooled=True)])


def table_selection(text: str):
    """``TABLE.txt#N`` -> (recording, begin, end) of selection N."""
    path, _, number = text.rpartition("#")
    if not os.path.isfile(path):
        raise StoreError(f"--query {text}: no table {path}")
    header, rows = read_rows(path, StoreError, empty_ok=True)
    for line, row in enumerate(rows[1:], start=2):
        if "selection" in header and row[header["selection"]].strip() == number.strip():
            try:
                begin, end = float(row[header["begin time (s)"]]), float(row[header["end time (s)"]])
            except (KeyError, ValueError):
                raise StoreError(f"{path}:{line}: selection {number} has no readable Begin and End Time (s)") from None
            for column in ("begin path", "begin file"):
                if column in header and row[header[column]].strip():
                    if "file offset (s)" in header and row[header["file offset (s)"]].strip():
                        try:
                            offset = float(row[header["file offset (s)"]])
                        except ValueError:
                            raise StoreError(f"{path}:{line}: malformed File Offset (s)") from None
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
    samples, rate, _ = read_snippet(recording, begin, end, 0.0)
    with tempfile.TemporaryDirectory() as folder:
        clip = os.path.join(folder, "query.wav")
        sf.write(clip, samples, rate)
        return query_vector(embed_audio(store, clip, model_path)), None


def hits_table(hits: List[Hit], data_opts: dict) -> str:
    """A Raven table of the hits: times within each file, ``Begin File``, ``Begin Path``,
    ``File Offset (s)`` and ``Similarity``."""
    columns = HEADER_COLUMNS + ["Begin File", "Begin Path", "File Offset (s)", "Similarity"]
    rows = [[str(n), "Spectrogram_1", str(h.channel), str(round(h.begin, 3)), str(round(h.end, 3)),
             str(data_opts.get("fmin", "")), str(data_opts.get("fmax", "")), "similar", " ",
             os.path.basename(h.recording), h.recording, str(round(h.begin, 3)), f"{h.similarity:.4f}"]
            for n, h in enumerate(hits, start=1)]
    return tsv(columns, rows)


def search_to_table(store: Store, query_text: str, top: int, output: str, model_path: Optional[str] = None
                    ) -> List[Hit]:
    """``embed.py search``: the ``top`` selections most like the query, as a Raven table."""
    query, exclude = resolve_query(store, query_text, model_path)
    hits = search(store, query, top, exclude)
    atomic_write_text(output, hits_table(hits, store.description.data_opts))
    logging.getLogger("EMBED").info(f"{len(hits)} selection(s) most like {query_text} written to {output}")
    return hits
