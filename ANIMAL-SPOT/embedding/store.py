"""The embedding store: the pooled features of every window of a season, on disk.

Layout of a store folder::

    store.json              what made it: the model (file and SHA-256, or backbone and
                            weights), spectrogram settings, window, hop, vector size, version
    parts/<key>.arrow       one Arrow IPC file per recording (uncompressed, so it is
                            memory-mapped, not read): columns start, end (seconds),
                            channel, vector (float16 x dim), norm (float32: the
                            vector's length, for search); the recording's path below
                            --input_file, its source, samples and hop in the schema metadata

Why Arrow files: a well-kept columnar format (pyarrow) that numpy reads without a copy,
so a search touches the vectors straight from the page cache; one file per recording
makes writing resumable (a recording is stored when its file exists) and atomic (written
beside, renamed into place), and lets processes and machines fill one store at once.
Brute-force cosine search over the memory-mapped float16 vectors (lengths stored in the
``norm`` column) answers 1 million windows of 512 in about 0.3 s on 2 cores
(bench/embedding_bench.py); past tens of millions a vector index (faiss, usearch) would be
needed.

Filling a store is one more output of a prediction run (``StoreSink``): the same
recordings, windows, batches, shares and journals as ``predict.py``. Several processes
and machines fill one store at once: a recording has one owner, each part is written to
its own fixed temporary name (``.<part>.partial``, overwritten when a killed run's
recording is redone) and renamed into place, and nothing touches another recording's
files; each process keeps its journal (``embed_journal.<process>.jsonl``) in the store.
"""

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..prediction.records import RecordingId
from ..prediction.sinks import Recording, Sink
from ..utils.atomic import OutputError, atomic_write, atomic_write_text

FORMAT, VERSION = "animal-spot-embeddings", 1
DESCRIPTION, PARTS = "store.json", "parts"
COMPARED = ("model", "data_opts", "min_max_norm", "window", "hop", "dim", "last_window")


class StoreError(ValueError):
    """A store cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class StoreDescription:
    """``store.json``: what made the store (the model: file and SHA-256, or backbone and
    weights, or a foundation encoder), its spectrogram settings, window, hop and vector
    size; written and read only here."""

    model: Dict
    data_opts: Dict
    min_max_norm: bool
    dim: int
    window: Optional[float] = None          # seconds (the run adds window and hop)
    hop: Optional[float] = None
    classes: Optional[Dict] = None
    created: str = ""
    torch: str = ""
    last_window: Optional[float] = None     # raw-audio windows: the seconds a padded last window holds (None: whole
                                            # windows only, as stores made before that rule)

    def differences(self, other: "StoreDescription") -> List[str]:
        """What differs from ``other`` in what the vectors mean (the engine that ran an
        encoder does not: its engines agree within the tested bound)."""
        def meaning(description, key):
            value = getattr(description, key)
            return {k: v for k, v in value.items() if k != "engine"} if key == "model" else value
        return [f"{key}: store {getattr(self, key)!r}, now {getattr(other, key)!r}" for key in COMPARED
                if meaning(self, key) != meaning(other, key)]

    def to_dict(self) -> Dict:
        return dict(dataclasses.asdict(self), format=FORMAT, version=VERSION)

    @classmethod
    def from_dict(cls, values: Dict, where: str) -> "StoreDescription":
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise StoreError(f"{where}: not an ANIMAL-SPOT embedding store")
        if int(values.get("version", 0)) > VERSION:
            raise StoreError(f"{where}: written by a newer version of this project (store version "
                             f"{values.get('version')})")
        try:
            return cls(dict(values["model"]), dict(values["data_opts"]), bool(values.get("min_max_norm", False)),
                       int(values["dim"]), float(values["window"]), float(values["hop"]), values.get("classes"),
                       values.get("created", ""), values.get("torch", ""), values.get("last_window"))
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(f"{where}: a store description without a readable {error}") from None


@dataclass(frozen=True)
class PartMeta:
    """A part's metadata: the recording it holds (``source``, as given, its length in frames
    and fingerprint: ``prediction.records.RecordingId``), its length and geometry (samples and
    hop at the model's rate ``sr``, the file's own ``rate`` and channels)."""

    source: str = ""
    given: str = ""
    seconds: float = 0.0
    n_samples: int = 0
    step: int = 1
    rate: int = 0
    channels: int = 1
    sr: int = 0
    frames: Optional[int] = None
    fingerprint: Optional[str] = None

    @classmethod
    def of(cls, recording: Recording) -> "PartMeta":
        identity = recording.identity or RecordingId(recording.path)
        source = recording.path if "://" in recording.path else os.path.abspath(recording.path)
        return cls(source, recording.path, recording.seconds, recording.n_samples, recording.step,
                   recording.sample_rate, recording.channels, recording.sr, identity.frames, identity.fingerprint)

    @property
    def identity(self) -> RecordingId:
        return RecordingId(self.source, self.frames, self.fingerprint)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict) -> "PartMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass
class Part:
    """One stored recording: its windows and vectors (memory-mapped)."""

    path: str
    recording: str                    # path below --input_file
    source: str                       # the recording file when it was embedded
    starts: np.ndarray
    ends: np.ndarray
    channels: np.ndarray
    chunks: List[np.ndarray]          # (windows, dim) float16 blocks as written, read-only views of the file
    meta: PartMeta
    stored_norms: Optional[np.ndarray] = None
    dim: int = 0

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """All the windows' vectors (a copy only where the part was written in several batches)."""
        if len(self.chunks) == 1:
            return self.chunks[0]
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, self.dim), np.float16)

    @functools.cached_property
    def norms(self) -> np.ndarray:
        """The float32 length of each float16 vector (stored since the ``norm`` column; else computed)."""
        if self.stored_norms is not None:
            return self.stored_norms
        return np.concatenate([vector_norms(c) for c in self.chunks]) if self.chunks else np.zeros(0, np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given (sorted) rows, without joining the blocks."""
        bounds = np.cumsum([0] + [len(c) for c in self.chunks])
        pieces = [c[rows[(rows >= low) & (rows < high)] - low]
                  for c, low, high in zip(self.chunks, bounds[:-1], bounds[1:])]
        return np.concatenate(pieces) if pieces else np.zeros((0, self.dim), np.float16)


def vector_norms(vectors: np.ndarray, block: int = 65536) -> np.ndarray:
    return np.concatenate([np.linalg.norm(np.asarray(vectors[i:i + block], np.float32), axis=1)
                           for i in range(0, len(vectors), block)]) if len(vectors) else np.zeros(0, np.float32)


class Store:
    def __init__(self, root: str):
        self.root = root
        self.description: Optional[StoreDescription] = None
        path = os.path.join(root, DESCRIPTION)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    values = json.load(handle)
            except (OSError, ValueError) as error:
                raise StoreError(f"{path}: not a store description ({error})") from None
            self.description = StoreDescription.from_dict(values, path)

    @classmethod
    def existing(cls, root: str) -> "Store":
        store = cls(root)
        if store.description is None:
            raise StoreError(f"--store {root}: no embedding store here (no {DESCRIPTION}); embed.py makes one")
        return store

    # ------------------------------------------------------------------ describe
    def check(self, description: StoreDescription, what: str = "append to") -> None:
        """Refuse to mix another model or other settings into this store."""
        if self.description is None:
            return
        different = self.description.differences(description)
        if different:
            details = "; ".join(different)
            raise StoreError(f"--store {self.root} was made with another model or settings; cannot {what} it "
                             f"({details}). Use a new --store, or the store's own model and settings.")

    def create(self, description: StoreDescription) -> None:
        """Describe a new store, or check that an existing one was made the same way
        (several processes may create one store at once)."""
        self.check(description)
        if self.description is None:
            self.description = description
            atomic_write_text(os.path.join(self.root, DESCRIPTION), json.dumps(description.to_dict(), indent=1))
        os.makedirs(os.path.join(self.root, PARTS), exist_ok=True)

    # ------------------------------------------------------------------- parts
    def part_path(self, recording: str) -> str:
        key = hashlib.sha1(recording.encode("utf-8")).hexdigest()[:20]
        return os.path.join(self.root, PARTS, f"{key}.arrow")

    def has(self, recording: str) -> bool:
        return os.path.isfile(self.part_path(recording))

    def writer(self, recording: str, meta: PartMeta) -> "PartWriter":
        """``with store.writer(recording, meta) as part: part.add(...)``: the recording's
        windows, written batch by batch to a hidden file that is renamed into place when the
        block ends without an error (bounded memory, all or nothing)."""
        return PartWriter(self, recording, meta)

    def write(self, recording: str, starts, ends, channels, vectors: np.ndarray, meta: PartMeta) -> None:
        with self.writer(recording, meta) as part:
            part.add(starts, ends, channels, vectors)

    def part_files(self) -> List[str]:
        folder = os.path.join(self.root, PARTS)
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".arrow")
                      and not n.startswith("."))

    def read(self, path: str) -> Part:
        try:
            table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        except (OSError, pa.ArrowInvalid) as error:
            raise StoreError(f"{path}: cannot read this part of the store ({error})") from None
        metadata = table.schema.metadata or {}
        try:
            meta = PartMeta.from_dict(json.loads(metadata.get(b"meta", b"{}")))
        except (TypeError, ValueError) as error:
            raise StoreError(f"{path}: unreadable part metadata ({error})") from None
        column = table.column("vector")
        dim = column.type.list_size
        chunks = [c.flatten().to_numpy(zero_copy_only=True).reshape(-1, dim) for c in column.chunks if len(c)]
        norms = table.column("norm").to_numpy() if "norm" in table.column_names else None
        return Part(path, metadata.get(b"recording", b"").decode("utf-8"), meta.source,
                    table.column("start").to_numpy(), table.column("end").to_numpy(),
                    table.column("channel").to_numpy(), chunks, meta, norms, dim)

    def parts(self) -> Iterator[Part]:
        for path in self.part_files():
            yield self.read(path)

    def recordings(self) -> Dict[str, str]:
        """recording (path below --input_file) -> part file."""
        return {self.read(p).recording: p for p in self.part_files()}

    def find(self, recording: str) -> Part:
        """A stored recording by its path below --input_file, or by its file name when that
        is unique."""
        if self.has(recording):
            return self.read(self.part_path(recording))
        matches = [p for p in self.parts() if os.path.basename(p.recording) == os.path.basename(recording)
                   or os.path.splitext(p.recording)[0] == os.path.splitext(recording)[0]]
        if len(matches) != 1:
            raise StoreError(f"recording {recording!r} is {'not' if not matches else 'not uniquely'} in the store "
                             f"{self.root}")
        return matches[0]

    def size(self) -> Tuple[int, int]:
        """(recordings, windows)."""
        parts = list(self.parts())
        return len(parts), sum(len(p.starts) for p in parts)


class PartWriter:
    """Writes one recording's part (see ``Store.writer``)."""

    def __init__(self, store: Store, recording: str, meta: PartMeta):
        self.store, self.recording, self.dim = store, recording, store.description.dim
        self.schema = pa.schema([("start", pa.float64()), ("end", pa.float64()), ("channel", pa.int16()),
                                 ("vector", pa.list_(pa.float16(), self.dim)), ("norm", pa.float32())],
                                metadata={b"recording": recording.encode("utf-8"),
                                          b"meta": json.dumps(meta.to_dict()).encode("utf-8")})
        self.windows = 0

    def __enter__(self) -> "PartWriter":
        final = self.store.part_path(self.recording)
        folder, name = os.path.split(final)
        self._context = atomic_write(final, "wb", temporary=os.path.join(folder, f".{name}.partial"))
        self._handle = self._context.__enter__()
        self._writer = pa.ipc.new_file(self._handle, self.schema)
        return self

    def add(self, starts, ends, channels, vectors) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float16).reshape(-1, self.dim)
        batch = pa.record_batch([pa.array(np.asarray(starts, dtype=np.float64)),
                                 pa.array(np.asarray(ends, dtype=np.float64)),
                                 pa.array(np.asarray(channels, dtype=np.int16)),
                                 pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float16()),
                                                                   self.dim),
                                 pa.array(vector_norms(vectors), pa.float32())], schema=self.schema)
        self._writer.write_batch(batch)
        self.windows += len(vectors)

    def __exit__(self, kind, value, trace):
        if kind is None:
            self._writer.close()
        return self._context.__exit__(kind, value, trace)


class StoreSink(Sink):
    """Embeddings as an output of a prediction run: each recording's pooled features go to
    its part of the store (all or nothing per recording)."""

    def __init__(self, store: Store):
        self.store = store
        self.part: Optional[PartWriter] = None

    def start(self, recording: Recording) -> None:
        self.part = self.store.writer(recording.relative, PartMeta.of(recording)).__enter__()

    def windows(self, recording, channel, windows) -> None:
        if windows:
            rows = [w.source for w in windows]
            self.part.add([w.start for w in windows], [w.end for w in windows], [w.channel or 1 for w in windows],
                          np.stack([batch.pooled[i].half().numpy() for batch, i in rows]))

    def end(self, recording, events) -> None:
        part, self.part = self.part, None
        part.__exit__(None, None, None)

    def discard(self, recording) -> None:
        """The recording failed midway: its half-written part goes."""
        if self.part is not None:
            part, self.part = self.part, None
            try:
                part.__exit__(OutputError, OutputError("discarded"), None)
            except OutputError:
                pass

    def complete(self, recording) -> bool:
        return self.store.has(recording.relative)

    def where(self, recording) -> str:
        return self.store.part_path(recording.relative)

    def owner(self, recording) -> Optional[RecordingId]:
        """The recording the stored part was embedded from (its ``source``, size and fingerprint)."""
        if not self.store.has(recording.relative):
            return None
        return self.store.read(self.store.part_path(recording.relative)).meta.identity
