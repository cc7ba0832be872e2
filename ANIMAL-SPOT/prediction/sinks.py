"""Result sinks: every output of a prediction run, behind one small interface.

A sink receives, for each recording, ``start(recording)``, then the decided windows in
order, batch by batch (``windows(recording, channel, windows)``: times, raw
probabilities, decisions, and the pooled features and network inputs where asked for),
then ``end(recording, events)`` with the recording's events (calls, all channels), and
``close()`` once at the end of the run. Memory stays bounded for any recording length:
a sink keeps what it writes, not the windows. Like the trainer's listeners, sinks know
nothing of each other; ``predict.py`` chooses them from its flags.

The original's outputs are sinks (``LogSink``: the per-recording prediction log, line
for line; ``LatentSink``: ``animal-spot-classifier.p``; ``PdfSink``: ``--visualize``), and
so are this project's (``RavenSink``, ``CombinedRavenSink``, and the ``--format`` sinks in
``FORMATS``). Adding a format is one class here and one entry in ``FORMATS``.

Every file is written atomically (a log to a hidden ``.partial`` file, renamed at the
end of its recording), so an interrupted run never leaves a half-written output.
"""

import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Dict, List, Optional, Sequence

import torch

from evaluation.raven import HEADER_COLUMNS, Event, table_rows, tsv
from prediction.decisions import DecisionRule, PostProcessing, Window, table_events
from evaluation.log_format import LogWriter
from utils.atomic import OutputError, atomic_write, atomic_write_text
from utils.classmap import ClassMap
from utils.logging import FORMAT, close_logger


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
    n_samples: int = 0              # at the model's sample rate
    step: int = 1                   # hop in samples
    sample_rate: int = 0            # the file's own
    channels: int = 1               # the file's
    begin_time: Optional[datetime] = None

    def output(self, suffix: str) -> str:
        return os.path.join(self.folder, self.stem + suffix)

    def log_name(self, channel: Optional[int] = None, each: bool = False) -> str:
        """``<name>_predict_output.log``; with --channels each on several channels,
        ``<name>_ch<C>_predict_output.log``."""
        if each and self.channels > 1:
            return f"{self.stem}_ch{channel}_predict_output.log"
        return f"{self.stem}_predict_output.log"


class Sink:
    """The interface (every hook optional)."""

    def start(self, recording: Recording) -> None: ...

    def windows(self, recording: Recording, channel: Optional[int], windows: Sequence[Window]) -> None: ...

    def end(self, recording: Recording, events: List[Event]) -> None: ...

    def close(self) -> None: ...

    def outputs(self, recording: Recording) -> List[str]:
        """The files this sink writes for ``recording`` (a rerun skips recordings whose
        outputs all exist)."""
        return []


# ------------------------------------------------------------------- the original's
class LogSink(Sink):
    """``<name>_predict_output.log`` (spec §8.3, §8.4), echoed to the console; with
    ``--channels each`` one log per channel, ``<name>_ch<C>_predict_output.log``."""

    def __init__(self, info: RunInfo, each_channel: bool = False):
        self.info, self.each = info, each_channel
        self.open: Dict[Optional[int], tuple] = {}

    def _writer(self, recording: Recording, channel: Optional[int]):
        """The channel's log (console only without --output_dir)."""
        if channel not in self.open:
            name = recording.log_name(channel, self.each)
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

    def discard(self) -> None:
        """A recording failed midway: its partial logs go."""
        for logger, _, partial, _ in self.open.values():
            close_logger(logger)
            if partial and os.path.exists(partial):
                os.remove(partial)
        self.open = {}

    def outputs(self, recording) -> List[str]:
        if self.each and recording.channels > 1:
            return [os.path.join(recording.folder, recording.log_name(c, True))
                    for c in range(1, recording.channels + 1)]
        return [os.path.join(recording.folder, recording.log_name())]


class LatentSink(Sink):
    """``--latent_extract``: one pickle for the run (``filenames``, ``features``,
    ``spectra_input`` per window), as the original."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "animal-spot-classifier.p")
        self.latent = {"filenames": [], "features": [], "spectra_input": []}

    def windows(self, recording, channel, windows) -> None:
        base = recording.path.replace(".wav", "")
        for w in windows:
            batch, n = w.source
            self.latent["filenames"].append(f"{base}_{w.start}_{w.end}.wav")
            self.latent["features"].append(batch.pooled[n].numpy())
            self.latent["spectra_input"].append(batch.inputs[n:n + 1].cpu())

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


# ------------------------------------------------------------------- tables of events
class EventTableSink(Sink):
    """A sink that writes a recording's events, one file per recording."""

    suffix = ""

    def __init__(self, info: RunInfo):
        self.info = info

    def rows(self, recording: Recording, events: List[Event]):
        """The Raven table's columns and rows (the selections, noise left out): the
        original's columns, ``Score``, ``Begin Path`` and ``Begin Date Time``."""
        selected = table_events(events, recording.seconds, self.info.class_map)
        return table_rows(selected, self.info.data_opts, score=True, extra_columns=("Begin Path", "Begin Date Time"),
                          extra=lambda e: (recording.relative, date_time(recording, e.begin)))

    def outputs(self, recording) -> List[str]:
        return [recording.output(self.suffix)]

    def end(self, recording, events) -> None:
        self.write(recording, events, recording.output(self.suffix))

    def write(self, recording: Recording, events: List[Event], path: str) -> None:
        raise NotImplementedError


class RavenSink(EventTableSink):
    """``--raven``: ``<name>.Table.1.selections.txt`` (the original's columns, ``Score``)."""

    suffix = ".Table.1.selections.txt"

    def write(self, recording, events, path) -> None:
        atomic_write_text(path, tsv(*self.rows(recording, events)))


class CsvSink(EventTableSink):
    """``--format csv``: ``<name>.csv``, the Raven table's rows and columns."""

    suffix = ".csv"

    def write(self, recording, events, path) -> None:
        import csv
        import io

        columns, rows = self.rows(recording, events)
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(columns)
        out.writerows([[cell.strip() for cell in row] for row in rows])
        atomic_write_text(path, text.getvalue())


NUMERIC = {"Selection": int, "Channel": int, "Begin time (s)": float, "End time (s)": float,
           "Low Freq (Hz)": float, "High Freq (Hz)": float, "Score": float}


class ParquetSink(EventTableSink):
    """``--format parquet``: ``<name>.parquet``, the same rows with typed columns."""

    suffix = ".parquet"

    def write(self, recording, events, path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns, rows = self.rows(recording, events)
        data = {}
        for i, name in enumerate(columns):
            cells = [row[i].strip() for row in rows]
            kind = NUMERIC.get(name)
            if kind is None:
                data[name] = pa.array(cells, pa.string())
            else:
                data[name] = pa.array([kind(c) if c else None for c in cells], pa.int64() if kind is int
                                      else pa.float64())
        with atomic_write(path, "wb") as handle:
            pq.write_table(pa.table(data), handle)


class AudacitySink(EventTableSink):
    """``--format audacity``: ``<name>.audacity.txt``, Audacity's label track
    (``start<TAB>end<TAB>label`` per line, seconds)."""

    suffix = ".audacity.txt"

    def write(self, recording, events, path) -> None:
        selected = table_events(events, recording.seconds, self.info.class_map)
        lines = [f"{e.begin:.6f}\t{e.end:.6f}\t{e.label}" + (f" (channel {e.channel})" if recording.channels > 1
                                                              and e.channel != 1 else "") for e in selected]
        atomic_write_text(path, "".join(line + "\n" for line in lines))


class JsonSink(EventTableSink):
    """``--format json``: ``<name>.json``, one document: the recording, the model, the events."""

    suffix = ".json"

    def write(self, recording, events, path) -> None:
        info = self.info
        selected = table_events(events, recording.seconds, info.class_map)
        document = {
            "recording": {"path": recording.path, "relative_path": recording.relative, "seconds": recording.seconds,
                          "sample_rate": recording.sample_rate, "channels": recording.channels,
                          "begin_time": recording.begin_time.isoformat() if recording.begin_time else None},
            "model": {"paths": info.model_paths, "classes": info.class_map.to_dict(), "data_opts": info.data_opts,
                      "window_seconds": info.sequence_len, "hop_seconds": info.hop,
                      "decision": {"threshold": info.rule.threshold, "thresholds": info.rule.thresholds,
                                   "temperature": info.rule.temperature, "unknown": info.unknown},
                      "post_processing": vars(info.post)},
            "events": [{"begin": e.begin, "end": e.end, "label": e.label, "score": e.score, "channel": e.channel}
                       for e in selected],
        }
        atomic_write_text(path, json.dumps(document, indent=1, default=str))


FORMATS = {"csv": CsvSink, "parquet": ParquetSink, "audacity": AudacitySink, "json": JsonSink}


class CombinedRavenSink(Sink):
    """``--raven``: ``combined.Table.1.selections.txt`` over all recordings of the run, with
    Raven's multi-file columns (times relative to the concatenated files, ``Begin File``,
    ``File Offset (s)``), ``Score``, ``Begin Path`` and ``Begin Date Time``."""

    NAME = "combined.Table.1.selections.txt"

    def __init__(self, info: RunInfo):
        self.info = info
        self.recordings: List[tuple] = []

    def end(self, recording, events) -> None:
        self.recordings.append((recording, table_events(events, recording.seconds, self.info.class_map)))

    def close(self) -> None:
        if self.recordings:
            atomic_write_text(os.path.join(self.info.output_dir, self.NAME), combined_table(self.recordings,
                                                                                           self.info.data_opts))


COMBINED_COLUMNS = HEADER_COLUMNS + ["Begin File", "File Offset (s)", "Score", "Begin Path", "Begin Date Time"]


def combined_table(recordings: Sequence[tuple], data_opts: Dict) -> str:
    """``recordings``: ``(Recording, its table events)`` in the order of the run."""
    from evaluation.raven import format_score

    fmin, fmax = data_opts.get("fmin", ""), data_opts.get("fmax", "")
    rows, number, offset = [], 0, 0.0
    for recording, events in recordings:
        for e in events:
            number += 1
            stamp = date_time(recording, e.begin)
            rows.append([str(number), "Spectrogram_1", str(e.channel), str(round(offset + e.begin, 3)),
                         str(round(offset + e.end, 3)), str(fmin), str(fmax), e.label, " ",
                         os.path.basename(recording.path), str(e.begin), format_score(e.score), recording.relative,
                         stamp])
        offset += recording.seconds
    return tsv(COMBINED_COLUMNS, rows)


def date_time(recording: Recording, seconds: float) -> str:
    """Raven's ``Begin Date Time`` of a moment of the recording (empty when its start time
    is unknown)."""
    if recording.begin_time is None:
        return ""
    return (recording.begin_time + timedelta(seconds=seconds)).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
