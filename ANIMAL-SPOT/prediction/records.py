"""Typed records at the file boundaries of a prediction run: each file is written and read
only through its record, so the keys live in one place (the files keep the keys they
always had).

* ``RecordingId``: which recording a set of outputs belongs to (its path as given, its
  length and a fingerprint of its first and last 16384 frames of audio). Two recorders
  writing the same time-stamped names at two sites have the same output names, not the
  same fingerprint.
* ``RunFile``: ``predict_run.json``, what a run decided with. ``changes()`` says which
  decision settings differ from an earlier run's, so a folder never mixes two.
"""

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import soundfile as sf

from ..data.remote import is_remote
from .decisions import DecisionRule, PostProcessing
from ..utils.atomic import atomic_write_text
from ..utils.classmap import ClassMap

RUN_FILE = "predict_run.json"
FINGERPRINT_FRAMES = 16384


# ------------------------------------------------------------------------ recordings
@dataclass(frozen=True)
class RecordingId:
    """A recording's identity: ``source`` (the path as given, or the URL), ``frames`` (its
    length in samples) and ``fingerprint`` (SHA-256 of its length, rate, channels and its
    first and last 16384 frames of audio: a tag added to the file later changes nothing);
    the last two are None for a URL (nothing is read twice over the network) and in older
    journals."""

    source: str
    frames: Optional[int] = None
    fingerprint: Optional[str] = None

    @classmethod
    def of(cls, path: str) -> "RecordingId":
        if is_remote(path) or not os.path.isfile(path):
            return cls(path)
        digest = hashlib.sha256()
        try:
            with sf.SoundFile(path) as audio:
                frames = audio.frames
                digest.update(f"{frames}|{audio.samplerate}|{audio.channels}".encode())
                digest.update(audio.read(FINGERPRINT_FRAMES, dtype="float32").tobytes())
                audio.seek(max(frames - FINGERPRINT_FRAMES, 0))
                digest.update(audio.read(FINGERPRINT_FRAMES, dtype="float32").tobytes())
        except (RuntimeError, sf.LibsndfileError, OSError):
            return cls(path)                          # unreadable: it fails on its own, in the run
        return cls(path, int(frames), digest.hexdigest()[:32])

    def same(self, other: "RecordingId") -> bool:
        """The same recording: equal fingerprints where both are known (a moved or
        remounted season is still itself), else the same path (resolved, or as given)."""
        if self.fingerprint and other.fingerprint:
            return self.fingerprint == other.fingerprint and self.frames == other.frames
        return resolved_path(self.source) == resolved_path(other.source) or \
            os.path.normpath(self.source) == os.path.normpath(other.source)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Optional[Dict]) -> Optional["RecordingId"]:
        if not isinstance(values, dict) or not values.get("source"):
            return None
        return cls(str(values["source"]), values.get("frames"), values.get("fingerprint"))


def resolved_path(path: Optional[str]) -> Optional[str]:
    """A local path resolved (links, ``.``, the working folder); a URL without a trailing ``/``."""
    if path is None:
        return None
    if is_remote(path):
        return path.rstrip("/")
    return os.path.realpath(path)


def control_characters(name: str) -> bool:
    """Whether a recording name holds a newline, tab or other control character (it would
    break the log's first line and the tab-separated Raven tables)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in name)


def check_names(paths: Sequence[str]) -> None:
    """Recording names that no table can hold are refused before anything is written."""
    bad = [p for p in paths if control_characters(p)]
    if bad:
        raise ValueError(f"{len(bad)} recording name(s) hold a newline, tab or other control character, which the "
                         f"logs and Raven tables cannot hold; rename them first: {', '.join(map(repr, bad[:5]))}")


# -------------------------------------------------------------------------- run file
DECIDING = ("input_file", "threshold", "thresholds", "temperature", "post", "channels", "classes", "models",
            "detector", "detector_threshold", "unknown", "sequence_len", "hop")
PATHS = ("models", "detector", "input_file")


@dataclass(frozen=True)
class RunFile:
    """``predict_run.json``: the run's recordings (and their output names below the
    folder) and everything it decided them with."""

    input_file: Optional[str] = None
    recordings: Tuple[str, ...] = ()
    outputs: Optional[Tuple[str, ...]] = None         # each recording's output name (None in older files)
    threshold: float = 0.5
    thresholds: Optional[Dict[str, float]] = None
    temperature: float = 1.0
    post: PostProcessing = PostProcessing()
    channels: str = "mean"
    timestamp_format: Optional[str] = None
    classes: Optional[Dict[str, int]] = None
    data_opts: Optional[Dict] = None
    raven: bool = False
    models: Tuple[str, ...] = ()
    detector: Optional[str] = None
    detector_threshold: Optional[float] = None
    unknown: bool = False
    sequence_len: Optional[float] = None
    hop: Optional[float] = None
    made_by: str = "predict.py"                       # or "embed.py classify"
    present: FrozenSet[str] = field(default=frozenset(DECIDING), compare=False)   # keys an older file held

    # ------------------------------------------------------------------ views
    @property
    def rule(self) -> DecisionRule:
        return DecisionRule(self.threshold, self.thresholds, self.temperature or 1.0)

    @property
    def class_map(self) -> ClassMap:
        return ClassMap.from_dict(self.classes or {})

    def output_names(self) -> Optional[Dict[str, str]]:
        """recording -> its output name below the folder (None where the file predates them)."""
        if self.outputs is None or len(self.outputs) != len(self.recordings):
            return None
        return dict(zip(self.recordings, self.outputs))

    def changes(self, earlier: "RunFile") -> List[str]:
        """The decision settings that differ from ``earlier``'s (settings an older file lacks
        are not compared; paths are compared resolved)."""
        def value(run, key):
            found = getattr(run, key)
            if key in PATHS and found is not None:
                return [resolved_path(p) for p in ([found] if isinstance(found, str) else found)]
            return found
        return [key for key in DECIDING if key in earlier.present and value(self, key) != value(earlier, key)]

    # ------------------------------------------------------------------ file
    def to_dict(self) -> Dict:
        return {"input_file": self.input_file, "recordings": list(self.recordings),
                "outputs": None if self.outputs is None else list(self.outputs), "threshold": self.threshold,
                "thresholds": self.thresholds, "temperature": self.temperature, "post": dataclasses.asdict(self.post),
                "channels": self.channels, "timestamp_format": self.timestamp_format, "classes": self.classes,
                "data_opts": self.data_opts, "raven": self.raven, "models": list(self.models),
                "detector": self.detector, "detector_threshold": self.detector_threshold, "unknown": self.unknown,
                "sequence_len": self.sequence_len, "hop": self.hop, "made_by": self.made_by}

    @classmethod
    def from_dict(cls, values: Dict, where: str = RUN_FILE) -> "RunFile":
        if not isinstance(values, dict):
            raise ValueError(f"{where}: not a run file (a JSON object)")
        try:
            models = values.get("models") or ()
            return cls(input_file=values.get("input_file"), recordings=tuple(values.get("recordings") or ()),
                       outputs=None if values.get("outputs") is None else tuple(values["outputs"]),
                       threshold=float(values.get("threshold", 0.5)), thresholds=values.get("thresholds"),
                       temperature=float(values.get("temperature") or 1.0),
                       post=PostProcessing(**(values.get("post") or {})), channels=values.get("channels") or "mean",
                       timestamp_format=values.get("timestamp_format"), classes=values.get("classes"),
                       data_opts=values.get("data_opts"), raven=bool(values.get("raven", False)),
                       models=(models,) if isinstance(models, str) else tuple(models), detector=values.get("detector"),
                       detector_threshold=values.get("detector_threshold"), unknown=bool(values.get("unknown", False)),
                       sequence_len=values.get("sequence_len"), hop=values.get("hop"),
                       made_by=values.get("made_by", "predict.py"), present=frozenset(values))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: not a run file this version can read ({error})") from None

    @staticmethod
    def path(folder: str) -> str:
        return os.path.join(folder, RUN_FILE)

    @classmethod
    def exists(cls, folder: str) -> bool:
        return os.path.isfile(cls.path(folder))

    @classmethod
    def read(cls, folder: str) -> "RunFile":
        path = cls.path(folder)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: no {RUN_FILE}; --merge needs a folder written by predict.py --shard")
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except ValueError as error:
            raise ValueError(f"{path}: not a readable run file ({error})") from None
        return cls.from_dict(values, path)

    def write(self, folder: str) -> None:
        """Written atomically, and only where it changed (shards write the same file)."""
        path = self.path(folder)
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                if handle.read() == text:
                    return
        atomic_write_text(path, text)
