"""One prediction run: recordings in; per recording, window batches from a source through a
``Decider`` into every sink; a journal line per recording.

Sources: ``AudioSource`` (a ``Predictor`` over audio: ``predict.py``, ``embed.py``) and
the stored windows of an embedding store seen through a head (``embedding.heads``). A
source opens a recording (``Opened``: what the outputs must know of it, and its streams
of ``WindowBatch``); ``Layout`` says where its outputs go (``--input_file``'s folders
mirrored below ``--output_dir``, nothing outside it); ``run_recording`` streams it;
``run_recordings`` does that for a list, skipping recordings whose outputs are complete
(unless ``overwrite``), naming and journalling failures and going on with the others.
"""

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from tqdm import tqdm

from ..data.audio_io import AudioFileError, SignalReader
from ..data.sources import file_stem, output_name, relative_name
from ..data.timestamps import start_time
from .core import Predictor, WindowBatch
from .decisions import Decider, DecisionRule, PostProcessing, table_events
from .folder import PredictionFolder
from .precision import Disagreement
from .records import RecordingId, RunFile, resolved_path
from .season import SeasonJournal, read_journals
from .sinks import Recording, Sink
from .tables import CombinedRavenSink, combined_table
from ..utils.atomic import atomic_write_text
from ..utils.classmap import ClassMap
from ..utils.paths import OutsideError, below

log = logging.getLogger("PREDICT")
CHANNEL_NAME = re.compile(r"^(.*)_ch(\d+)$")
RECORDING_ERRORS = (AudioFileError, OSError, ValueError)       # one recording fails; the run goes on


@dataclass
class Opened:
    """A recording opened by a source."""

    seconds: float
    n_samples: int                      # at the source's sample rate
    step: int                           # hop in samples
    rate: int                           # the file's own sample rate
    channels: int
    windows: int                        # per channel
    sr: int                             # the source's sample rate (of n_samples and step)
    streams: List[Tuple[Optional[int], Iterator[WindowBatch]]]     # (channel or None, batches)
    close: Callable[[], None] = lambda: None
    relative: Optional[str] = None      # its path below the run's input, where the source knows it
    given: Optional[str] = None         # the path the log names, where the source knows it


class AudioSource:
    """Recordings through a ``Predictor``; ``channels``: ``mean`` (the down-mix), ``max``
    (per window the channel with the most probable top class) or ``each``."""

    def __init__(self, predictor: Predictor, channels: str = "mean", pooled: bool = False):
        self.predictor, self.channels, self.pooled = predictor, channels, pooled

    def open(self, path: str) -> Opened:
        predictor, first = self.predictor, self.predictor.models[0]
        reader = SignalReader(path, first.options.sr)                 # an unreadable file stops here
        if reader.rate < 2 * first.options.fmax:
            log.warning(f"{path}: sampled at {reader.rate} Hz, below twice the model's fmax ({first.options.fmax} "
                        f"Hz): the band above {reader.rate / 2:g} Hz is empty in this recording")
        geometry = predictor.geometry(reader)
        if reader.n_samples < geometry.window:
            log.info(f"{path}: {reader.seconds:.3f} s, shorter than one window ({predictor.sequence_len} s): one "
                     "window over the whole recording (zero-padded to one FFT frame where shorter)")
        if self.channels == "each" and reader.channels > 1:
            streams = [(c, predictor.stream(path, self.pooled, channel=c)) for c in range(1, reader.channels + 1)]
        elif self.channels == "max" and reader.channels > 1:
            streams = [(None, predictor.stream_max(path, reader.channels, self.pooled))]
        else:
            streams = [(None, predictor.stream(path, self.pooled, reader=reader))]
        return Opened(reader.seconds, reader.n_samples, geometry.step, reader.rate, reader.channels, geometry.count,
                      reader.sr, streams, reader.close)


@dataclass(frozen=True)
class Layout:
    """Where a run's outputs go: ``output_dir`` (None: the console only) mirroring the
    recordings' folders below ``input_file``."""

    input_file: str
    output_dir: Optional[str] = None
    timestamp_format: Optional[str] = None

    def key(self, path: str) -> str:
        """The recording's output name below ``output_dir`` (its folder and file stem)."""
        return output_name(relative_name(self.input_file, path))

    def check_unique(self, paths: Sequence[str], stores: bool = False, each_channel: bool = False) -> None:
        """Two recordings whose outputs would have one name (``a/rec.wav`` and ``b/rec.wav``
        from a list, ``rec.wav`` and ``rec.flac``; with ``each_channel``, a stereo
        ``rec.wav``'s ``rec_ch1`` and a mono ``rec_ch1.wav``) stop the run before anything is
        written. ``stores``: named as an embedding store names its parts (with the file's ending)."""
        owners: dict = {}
        for path in paths:
            owners.setdefault(relative_name(self.input_file, path) if stores else self.key(path), []).append(path)
        clashes = [names for names in owners.values() if len(names) > 1]
        if each_channel and not stores:
            clashes += self.channel_clashes(owners)
        if clashes:
            raise ValueError("recordings whose outputs would have the same name (rename one, or give their folder as "
                             "--input_file so that sub-folders are mirrored): "
                             + "; ".join(" and ".join(names) for names in clashes[:5]))

    @staticmethod
    def channel_clashes(owners: dict) -> List[List[str]]:
        """``--channels each``: a recording named ``<name>_ch<C>`` beside a recording ``<name>``
        of C channels or more (only those are opened, to count their channels)."""
        clashes = []
        for key, (path, *_) in owners.items():
            named = CHANNEL_NAME.match(key)
            if named and named.group(1) in owners and str(int(named.group(2))) == named.group(2):
                other = owners[named.group(1)][0]
                count = channel_count(other)
                if count >= 2 and count >= int(named.group(2)):         # a mono file writes no channel logs
                    clashes.append([f"{other} (channel {named.group(2)})", path])
        return clashes

    def recording(self, path: str, opened: Optional[Opened] = None, seconds: float = 0.0) -> Recording:
        """The recording's description and its output folder (``OutsideError`` where its
        name would lead outside ``output_dir``)."""
        relative = opened.relative if opened is not None and opened.relative else relative_name(self.input_file, path)
        folder = below(self.output_dir, os.path.dirname(relative)) if self.output_dir else None
        given = opened.given if opened is not None and opened.given else path
        recording = Recording(given, relative, file_stem(relative), folder, seconds,
                              begin_time=start_time(given, self.timestamp_format))
        if opened is not None:
            recording.seconds, recording.n_samples, recording.step = opened.seconds, opened.n_samples, opened.step
            recording.sample_rate, recording.channels, recording.windows = opened.rate, opened.channels, opened.windows
            recording.sr = opened.sr
        return recording


@dataclass(frozen=True)
class Decisions:
    """How windows become decisions and events."""

    rule: DecisionRule
    class_map: ClassMap
    post: PostProcessing = PostProcessing()


def run_recording(opened: Opened, recording: Recording, sinks: Sequence[Sink], decisions: Decisions,
                  progress: Optional[Callable[[float], None]] = None, check: Optional[Disagreement] = None) -> int:
    """Stream one recording through a decider into every sink; returns its windows."""
    for sink in sinks:
        sink.start(recording)
    events = []
    for channel, stream in opened.streams:
        decider = Decider(decisions.rule, decisions.class_map, decisions.post)
        for batch in stream:
            windows = decider.feed(batch.starts, batch.ends, batch.probs, batch.unknown, batch.meta(channel))
            for sink in sinks:
                sink.windows(recording, channel, windows)
            if check is not None:
                check.compare(batch, decisions.rule, decisions.class_map, recording.relative)
            if progress is not None:
                progress(len(batch.starts) * opened.step / opened.sr / len(opened.streams))
        windows = decider.flush()
        for sink in sinks:
            sink.windows(recording, channel, windows)
        events += decider.events(recording.stem)
    events.sort(key=lambda e: (e.begin, e.channel))
    for sink in sinks:
        sink.end(recording, events)
    return opened.windows * len(opened.streams)


def run_recordings(paths: Sequence[str], source, layout: Layout, sinks: Sequence[Sink], decisions: Decisions,
                   journal: Optional[SeasonJournal] = None, overwrite: bool = False, progress=None,
                   check: Optional[Disagreement] = None) -> List[str]:
    """Every recording of ``paths`` through ``run_recording``; returns those that failed."""
    failed = []
    for path in paths:
        started = time.time()
        try:
            opened = source.open(path)
        except RECORDING_ERRORS as error:                  # name it, go on with the other recordings
            failed.append(fail(journal, path, error))
            continue
        try:
            recording = layout.recording(path, opened)
            recording.identity = RecordingId.of(path)
            mark = {"recording": path, "key": recording.relative, "id": recording.identity.to_dict()}
            if not overwrite and all(sink.complete(recording) for sink in sinks):
                log.info(f"{path}: outputs complete, skipped (--overwrite redoes it)")
                for sink in sinks:
                    sink.skipped(recording, lambda: recording_events(layout, recording, decisions))
                if journal:
                    journal.write("skipped", audio_seconds=opened.seconds, **mark)
                continue
            windows = run_recording(opened, recording, sinks, decisions, progress, check)
            if journal:
                journal.write("done", audio_seconds=opened.seconds, windows=windows,
                              wall_seconds=round(time.time() - started, 3), **mark)
        except RECORDING_ERRORS as error:               # OutsideError too: a name that leads outside
            failed.append(fail(journal, path, error))
            for sink in sinks:
                sink.discard(None)
        finally:
            opened.close()
    return failed


def journal_owners(folder: str, prefix: str) -> dict:
    """recording key -> the ``RecordingId`` of the newest done or skipped journal line."""
    owners = {}
    for entry in read_journals(folder, prefix)[0] if os.path.isdir(folder) else []:
        found = RecordingId.from_dict(entry.get("id")) if entry.get("event") in ("done", "skipped") else None
        if found is not None and entry.get("key"):
            owners[entry["key"]] = found
    return owners


PREDICT_ADVICE = "Predict them into another --output_dir, or --overwrite to replace those outputs"


def check_owners(paths: Sequence[str], layout: Layout, sinks: Sequence[Sink], owners: dict,
                 advice: str = PREDICT_ADVICE) -> None:
    """Outputs in the folder under a recording's name that another recording wrote (two
    sites' ``rec.wav``, a file replaced in place) are neither skipped as complete nor
    overwritten: refused, naming both, before anything is written. ``owners``: the
    journals' record of who wrote what (``journal_owners``); else what the outputs say.
    Every process of a job checks every recording, so all refuse alike."""
    clashes = []
    for path in paths:
        try:
            recording = layout.recording(path)
            claimed = [(sink.where(recording), found) for sink in sinks for found in [sink.owner(recording)]
                       if found is not None]
            if not claimed:
                continue
            where, named = claimed[0]
            stored = owners.get(recording.relative, named)
            current = RecordingId.of(path)
        except (OutsideError, OSError, ValueError):
            continue                                    # such a recording fails on its own, in the run
        if stored.same(current):
            continue
        if resolved_path(stored.source) == resolved_path(path):
            clashes.append(f"{path} changed since {where} was written for it (another file of the same name)")
        else:
            clashes.append(f"{path}: {where} holds the outputs of {stored.source}")
    if clashes:
        raise ValueError(f"{len(clashes)} recording(s) would meet the outputs of another recording of the same name: "
                         + "; ".join(clashes[:5]) + ". " + advice)


def channel_count(path: str) -> int:
    try:
        reader = SignalReader(path, 8000)
    except AudioFileError:
        return 1                                        # fails on its own, in the run
    try:
        return reader.channels
    finally:
        reader.close()


def fail(journal: Optional[SeasonJournal], path: str, error: Exception) -> str:
    reason = " ".join(str(error).split())
    log.error(reason if path in reason else f"{path}: {reason}")
    if journal:
        journal.write("failed", recording=path, reason=reason)
    return path


def output_key(output_dir: str, recording: Recording) -> str:
    return os.path.relpath(os.path.join(recording.folder, recording.stem), output_dir)


def recording_events(layout: Layout, recording: Recording, decisions: Decisions):
    """A finished recording's events, read back from its outputs (the folder's rule)."""
    folder = PredictionFolder(layout.output_dir)
    outputs = folder.find(output_key(layout.output_dir, recording))
    return folder.events(outputs, decisions.rule, decisions.post) if outputs else []


# --------------------------------------------------------------------------- merge
def write_combined(output_dir: str) -> List[str]:
    """``combined.Table.1.selections.txt`` of a folder predicted in shares, from every
    recording's logs in the run's order, exactly as one process writes it; returns the
    recordings without outputs yet."""
    run = RunFile.read(output_dir)
    seconds = {e["recording"]: e.get("audio_seconds", 0.0) for e in read_journals(output_dir)[0]
               if e["event"] in ("done", "skipped")}
    folder = PredictionFolder(output_dir)
    layout = Layout(run.input_file, output_dir, run.timestamp_format)
    rows, missing = [], []
    for path in run.recordings:
        recording = layout.recording(path, seconds=seconds.get(path, 0.0))
        outputs = folder.find(output_key(output_dir, recording))
        if path not in seconds or outputs is None or not outputs.logs:
            missing.append(path)
            continue
        rows.append((recording, table_events(folder.events(outputs), recording.seconds, run.class_map)))
    atomic_write_text(os.path.join(output_dir, CombinedRavenSink.NAME), combined_table(rows, run.data_opts))
    log.info(f"Written {os.path.join(output_dir, CombinedRavenSink.NAME)} ({len(rows)} recording(s))")
    return missing


class Progress:
    """Files, audio hours done, real-time factor and ETA on standard error (quiet when it
    is not a terminal)."""

    def __init__(self, files: Sequence[str]):
        total = 0.0
        for path in files:
            if "://" in path:                 # remote: not opened twice
                continue
            try:
                total += SignalReader(path, 8000).seconds
            except AudioFileError:
                pass
        self.started, self.done = time.time(), 0.0
        self.bar = tqdm(total=round(total / 3600, 4), unit="h audio", desc=f"{len(files)} file(s)", disable=None,
                        leave=False)

    def advance(self, seconds: float) -> None:
        self.done += seconds
        rtf = self.done / max(time.time() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rtf:.0f}x real time", refresh=False)
        self.bar.update(seconds / 3600)

    def close(self) -> None:
        self.bar.close()

