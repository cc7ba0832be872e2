"""The event tables of a prediction run: sinks that write a recording's events (calls) as
a file each, and read them back.

``RavenSink`` (``--raven``): ``<name>.Table.1.selections.txt``, the original's columns
then ``Score``, ``Begin Path`` and ``Begin Date Time``; ``CombinedRavenSink``: one table
over the run's recordings with Raven's multi-file columns. ``--format`` adds, from the
same rows: ``<name>.csv`` (``CsvSink``), ``<name>.parquet`` (typed columns,
``ParquetSink``), ``<name>.audacity.txt`` (Audacity's label track, ``AudacitySink``) and
``<name>.json`` (one document, ``JsonSink``). Adding a format is one class here and one
entry in ``FORMATS``; each class's ``read(path)`` gives back the events it wrote.
"""

import csv
import io
import json
import os
import re
from datetime import timedelta
from typing import Dict, List, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..evaluation.raven import HEADER_COLUMNS, Event, format_score, read_table, table_rows, tsv
from .decisions import table_events
from .sinks import Recording, RunInfo, Sink
from ..utils.atomic import atomic_write, atomic_write_text


def date_time(recording: Recording, seconds: float) -> str:
    """Raven's ``Begin Date Time`` of a moment of the recording (empty when its start time
    is unknown)."""
    if recording.begin_time is None:
        return ""
    return (recording.begin_time + timedelta(seconds=seconds)).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]


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

    @classmethod
    def stem_of(cls, path: str) -> str:
        return os.path.basename(path)[:-len(cls.suffix)]


def _events_of_rows(path: str, rows: Sequence[Dict], stem: str) -> List[Event]:
    """Events from rows keyed by the Raven table's column names (CSV, Parquet)."""
    def number(value, kind, default=None):
        return default if value in (None, "") else kind(value)
    return [Event(stem, float(r["Begin time (s)"]), float(r["End time (s)"]), str(r["Sound type"]),
                  number(r.get("Score"), float), number(r.get("Channel"), int, 1)) for r in rows]


class RavenSink(EventTableSink):
    """``--raven``: ``<name>.Table.1.selections.txt`` (the original's columns, ``Score``)."""

    suffix = ".Table.1.selections.txt"

    def write(self, recording, events, path) -> None:
        atomic_write_text(path, tsv(*self.rows(recording, events)))

    @classmethod
    def read(cls, path: str) -> List[Event]:
        return read_table(path)


class CsvSink(EventTableSink):
    """``--format csv``: ``<name>.csv``, the Raven table's rows and columns."""

    suffix = ".csv"

    def write(self, recording, events, path) -> None:
        columns, rows = self.rows(recording, events)
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(columns)
        out.writerows([[cell.strip() for cell in row] for row in rows])
        atomic_write_text(path, text.getvalue())

    @classmethod
    def read(cls, path: str) -> List[Event]:
        with open(path, encoding="utf-8", newline="") as handle:
            return _events_of_rows(path, list(csv.DictReader(handle)), cls.stem_of(path))


NUMERIC = {"Selection": int, "Channel": int, "Begin time (s)": float, "End time (s)": float,
           "Low Freq (Hz)": float, "High Freq (Hz)": float, "Score": float}


class ParquetSink(EventTableSink):
    """``--format parquet``: ``<name>.parquet``, the same rows with typed columns."""

    suffix = ".parquet"

    def write(self, recording, events, path) -> None:
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

    @classmethod
    def read(cls, path: str) -> List[Event]:
        return _events_of_rows(path, pq.read_table(path).to_pylist(), cls.stem_of(path))


class AudacitySink(EventTableSink):
    """``--format audacity``: ``<name>.audacity.txt``, Audacity's label track
    (``start<TAB>end<TAB>label`` per line, seconds; `` (channel C)`` after the label of an
    event on another channel than the first)."""

    suffix = ".audacity.txt"
    CHANNEL = re.compile(r"^(.*) \(channel (\d+)\)$")

    def write(self, recording, events, path) -> None:
        selected = table_events(events, recording.seconds, self.info.class_map)
        lines = [f"{e.begin:.6f}\t{e.end:.6f}\t{e.label}" + (f" (channel {e.channel})" if recording.channels > 1
                                                              and e.channel != 1 else "") for e in selected]
        atomic_write_text(path, "".join(line + "\n" for line in lines))

    @classmethod
    def read(cls, path: str) -> List[Event]:
        events = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip() or line.startswith("\\"):          # "\" lines: spectral selections
                    continue
                begin, end, label = line.rstrip("\n").split("\t", 2)
                found = cls.CHANNEL.match(label)
                channel = int(found.group(2)) if found else 1
                events.append(Event(cls.stem_of(path), float(begin), float(end),
                                    found.group(1) if found else label, None, channel))
        return events


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

    @classmethod
    def read(cls, path: str) -> List[Event]:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        return [Event(cls.stem_of(path), e["begin"], e["end"], e["label"], e.get("score"), e.get("channel", 1))
                for e in document["events"]]


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

    def skipped(self, recording, events) -> None:
        self.end(recording, events())

    def close(self) -> None:
        if self.recordings:
            atomic_write_text(os.path.join(self.info.output_dir, self.NAME), combined_table(self.recordings,
                                                                                           self.info.data_opts))

    @classmethod
    def read(cls, path: str) -> List[Event]:
        """The rows as events of their own recordings (``Begin File``, ``File Offset (s)``)."""
        return read_table(path)


COMBINED_COLUMNS = HEADER_COLUMNS + ["Begin File", "File Offset (s)", "Score", "Begin Path", "Begin Date Time"]


def combined_table(recordings: Sequence[tuple], data_opts: Dict) -> str:
    """``recordings``: ``(Recording, its table events)`` in the order of the run."""
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

