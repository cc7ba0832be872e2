"""Result sinks: every output of a prediction run, behind one small interface.

A sink receives, for each recording, ``start(recording)``, then the decided windows in
order, batch by batch (``windows(recording, channel, windows)``: times, raw
probabilities, decisions, and the pooled features and network inputs where asked for),
then ``end(recording, events)`` with the recording's events (calls, all channels), and
``close()`` once at the end of the run. Memory stays bounded for any recording length:
a sink keeps what it writes, not the windows. Like the trainer's listeners, sinks know
nothing of each other; ``predict.py`` chooses them from its flags.

A sink owns its files: their names (``outputs``, ``suffix``), whether a recording's are
complete (``complete``: a rerun skips it), and, for the files other tools read back, how
to read them (``read``). ``prediction.folder`` reads a prediction folder through them.

The original's outputs are sinks here (``LogSink``: the per-recording prediction log,
line for line; ``LatentSink``: ``animal-spot-classifier.p``; ``PdfSink``: ``--visualize``);
this project's event tables are in ``prediction.tables``; embeddings are
``embedding.store.StoreSink``.

Every file is written atomically (a log to a hidden ``.partial`` file, renamed at the
end of its recording), so an interrupted run never leaves a half-written output.
"""

import logging
import os
import pickle
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..evaluation.log_format import LogFormatError, LogWriter, PredictionLog, logged_recording, parse_log
from ..evaluation.raven import Event
from .decisions import DecisionRule, PostProcessing, Window
from .records import RecordingId
from ..utils.atomic import OutputError, atomic_write
from ..utils.classmap import ClassMap
from ..utils.logging import FORMAT, close_logger


@dataclass
class RunInfo:
    """What every recording of a run shares: the models and the decision settings."""

    model_paths: List[str]
    class_map: ClassMap
    data_opts: Dict
    sequence_len: float
    hop: float
    rule: DecisionRule
    post: PostProcessing = field(default_factory=PostProcessing)
    min_max_norm: bool = False
    output_dir: Optional[str] = None
    debug: bool = False
    unknown: bool = False

    @property
    def fmin(self):
        return self.data_opts.get("fmin")

    @property
    def fmax(self):
        return self.data_opts.get("fmax")


@dataclass
class Recording:
    """One recording of a run and where its outputs go."""

    path: str                       # as found (the log's first line)
    relative: str                   # its path below --input_file (``Begin Path``)
    stem: str                       # output name: the file name without its extension
    folder: Optional[str]           # its output folder (--input_file's sub-folders mirrored)
    seconds: float = 0.0
    n_samples: int = 0              # at the model's sample rate (sr)
    step: int = 1                   # hop in samples
    sample_rate: int = 0            # the file's own
    channels: int = 1               # the file's
    begin_time: Optional[datetime] = None
    windows: int = 0                # windows per channel
    identity: Optional[RecordingId] = None      # which recording it is (size and fingerprint), once opened
    sr: int = 0                     # the model's sample rate (of n_samples and step)

    def output(self, suffix: str) -> str:
        return os.path.join(self.folder, self.stem + suffix)


class Sink:
    """The interface (every hook optional)."""

    def start(self, recording: Recording) -> None: ...

    def windows(self, recording: Recording, channel: Optional[int], windows: Sequence[Window]) -> None: ...

    def end(self, recording: Recording, events: List[Event]) -> None: ...

    def discard(self, recording: Recording) -> None:
        """The recording failed midway: drop what was begun."""

    def skipped(self, recording: Recording, events: Callable[[], List[Event]]) -> None:
        """The recording's outputs were complete from an earlier run (``events()`` reads them)."""

    def close(self) -> None: ...

    def outputs(self, recording: Recording) -> List[str]:
        """The files this sink writes for ``recording``."""
        return []

    def complete(self, recording: Recording) -> bool:
        """Whether this sink's outputs of ``recording`` are there from an earlier run."""
        return bool(recording.folder) and all(os.path.isfile(p) for p in self.outputs(recording))

    def owner(self, recording: Recording) -> Optional[RecordingId]:
        """The recording that this sink's outputs under ``recording``'s name were written
        for, as far as they say (None: no such outputs, or they do not say)."""
        return None

    def where(self, recording: Recording) -> str:
        """Where those outputs are (for a message)."""
        return ", ".join(self.outputs(recording)) or "the folder"


# ------------------------------------------------------------------- the original's
class LogSink(Sink):
    """``<name>_predict_output.log`` (spec §8.3, §8.4), echoed to the console; with
    ``--channels each`` one log per channel, ``<name>_ch<C>_predict_output.log``."""

    suffix = "_predict_output.log"

    def __init__(self, info: RunInfo, each_channel: bool = False, echo: bool = True):
        self.info, self.each, self.echo = info, each_channel, echo       # echo: the lines on the console too
        self.open: Dict[Optional[int], tuple] = {}

    @classmethod
    def name(cls, stem: str, channel: Optional[int] = None) -> str:
        return f"{stem}_ch{channel}{cls.suffix}" if channel is not None else stem + cls.suffix

    @classmethod
    def read(cls, path: str) -> PredictionLog:
        return parse_log(path)

    def log_name(self, recording: Recording, channel: Optional[int]) -> str:
        return self.name(recording.stem, channel if self.each and recording.channels > 1 else None)

    def _writer(self, recording: Recording, channel: Optional[int]):
        """The channel's log (console only without --output_dir)."""
        if channel not in self.open:
            name = self.log_name(recording, channel)
            final = partial = None
            logger = logging.getLogger(f"{recording.stem}_predict_output" + (f"_ch{channel}" if self.each else ""))
            close_logger(logger)
            logger.setLevel(logging.DEBUG if self.info.debug else logging.INFO)
            logger.propagate = False
            if recording.folder:
                final = os.path.join(recording.folder, name)
                partial = os.path.join(recording.folder, f".{name}.partial")
                try:
                    os.makedirs(recording.folder, exist_ok=True)
                    handler = logging.FileHandler(partial, mode="w")
                except OSError as error:
                    raise OutputError(f"{final}: cannot write the log ({error.strerror or error})") from None
                handler.setFormatter(FORMAT)
                logger.addHandler(handler)
            if self.echo or not recording.folder:
                console = logging.StreamHandler()
                console.setFormatter(FORMAT)
                logger.addHandler(console)
            writer = LogWriter(logger, self.info.class_map)
            info = self.info
            writer.header(recording.path, ",".join(info.model_paths), info.data_opts, info.sequence_len, info.hop,
                          info.rule.threshold, info.fmin, info.fmax, info.min_max_norm, recording.n_samples,
                          recording.step)
            self.open[channel] = (logger, writer, partial, final)
        return self.open[channel][1]

    def windows(self, recording, channel, windows) -> None:
        writer = self._writer(recording, channel if self.each else None)
        for w in windows:
            writer.record(w.start, w.end, w.probs, w.flag, w.start_sample, w.end_sample, w.unknown)

    def end(self, recording, events) -> None:
        for logger, _, partial, final in self.open.values():
            close_logger(logger)
            if partial:
                os.replace(partial, final)
        self.open = {}

    def discard(self, recording=None) -> None:
        """A recording failed midway: its partial logs go."""
        for logger, _, partial, _ in self.open.values():
            close_logger(logger)
            if partial and os.path.exists(partial):
                os.remove(partial)
        self.open = {}

    def outputs(self, recording) -> List[str]:
        channels = range(1, recording.channels + 1) if self.each and recording.channels > 1 else [None]
        return [os.path.join(recording.folder, self.log_name(recording, c)) for c in channels]

    def existing_log(self, recording) -> Optional[str]:
        """The recording's log (one log, or a channel set's first) where there is one."""
        for name in (self.name(recording.stem), self.name(recording.stem, 1)) if recording.folder else ():
            if os.path.isfile(os.path.join(recording.folder, name)):
                return os.path.join(recording.folder, name)
        return None

    def owner(self, recording) -> Optional[RecordingId]:
        """The recording the log's first line names."""
        path = self.existing_log(recording)
        named = logged_recording(path) if path else None
        return RecordingId(named) if named else None

    def where(self, recording) -> str:
        return self.existing_log(recording) or super().where(recording)

    def complete(self, recording) -> bool:
        """Every log is there and holds every window."""
        if not recording.folder:
            return False
        try:
            return all(os.path.isfile(p) and len(parse_log(p).windows) == recording.windows
                       for p in self.outputs(recording))
        except (LogFormatError, OSError, ValueError):
            return False


class EventCount(Sink):
    """The run's summary: recordings, audio seconds and events per label."""

    def __init__(self):
        self.recordings, self.seconds, self.events = 0, 0.0, {}

    def end(self, recording, events) -> None:
        self.count(recording, events)

    def skipped(self, recording, events) -> None:
        self.count(recording, events())

    def count(self, recording, events) -> None:
        self.recordings += 1
        self.seconds += recording.seconds
        for event in events:
            if event.label != "noise":
                self.events[event.label] = self.events.get(event.label, 0) + 1

    def summary(self) -> str:
        labels = ", ".join(f"{label} {count}" for label, count in sorted(self.events.items())) or "none"
        return (f"{self.recordings} recording(s), {self.seconds / 3600:.2f} h of audio; events: "
                f"{sum(self.events.values())} ({labels})")


class LatentSink(Sink):
    """``--latent_extract``: one pickle for the run (``filenames``, ``features``,
    ``spectra_input`` per window), as the original."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "animal-spot-classifier.p")
        self.latent = {"filenames": [], "features": [], "spectra_input": []}
        self.begun: Optional[int] = None       # the windows before the recording now predicted

    def complete(self, recording) -> bool:
        return False                       # one file for the run: every recording is in it again

    def start(self, recording) -> None:
        self.begun = len(self.latent["filenames"])

    def discard(self, recording) -> None:
        """The recording failed midway: its windows leave the run's file (nothing where it
        failed before it started)."""
        if self.begun is not None:
            for values in self.latent.values():
                del values[self.begun:]
        self.begun = None

    def windows(self, recording, channel, windows) -> None:
        base = recording.path.replace(".wav", "")
        for w in windows:
            batch, n = w.source
            self.latent["filenames"].append(f"{base}_{w.start}_{w.end}.wav")
            self.latent["features"].append(batch.pooled[n].numpy())
            self.latent["spectra_input"].append(batch.inputs[n:n + 1].cpu())

    def end(self, recording, events) -> None:
        self.begun = None

    def close(self) -> None:
        if self.latent["filenames"]:
            with atomic_write(self.path, "wb") as handle:
                pickle.dump(self.latent, handle)


class PdfSink(Sink):
    """``--visualize``: a PDF of the network input of every window."""

    def __init__(self, options, class_map: ClassMap):
        self.options, self.class_map, self.count = options, class_map, 0

    def start(self, recording) -> None:
        self.count = 0

    def complete(self, recording) -> bool:
        return False                       # its PDFs are not tracked: asked for, they are written again

    def windows(self, recording, channel, windows) -> None:
        binary = self.class_map.is_binary
        for w in windows:
            batch, n = w.source
            c = max(range(len(w.probs)), key=w.probs.__getitem__)
            label = self.class_map.name_of(w.flag if binary else c)
            visualize(batch.inputs[n], self.options, label, recording, self.count)
            self.count += 1


def visualize(item: torch.Tensor, options, label: str, recording: Recording, index: int) -> None:
    """A PDF of one window's network input (frequency x time)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = item[0].float().cpu().t().numpy()                                   # (F, T)
    figure, axis = plt.subplots(figsize=(5, 10))
    figure.suptitle("Spectrogram")
    axis.set_title("spectrogram")
    freqs = torch.linspace(options.fmin, options.fmax, spec.shape[0]).numpy()
    times = (torch.arange(spec.shape[1]) * options.hop_length / options.sr).numpy()
    mesh = axis.pcolormesh(times, freqs, spec, cmap="viridis", shading="auto")
    axis.set_xlabel("time [s]")
    axis.set_ylabel("frequency [Hz]")
    figure.colorbar(mesh, ax=axis)
    out = os.path.join(recording.folder, f"net_input_spec_{index}_{label}_{recording.stem}.pdf")
    with atomic_write(out, "wb", durable=False) as handle:
        figure.savefig(handle, format="pdf")
    plt.close(figure)


