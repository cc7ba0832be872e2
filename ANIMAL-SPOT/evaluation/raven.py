"""Raven selection tables (``*.selections.txt``), read and written: the user's
annotations and this project's prediction tables, as events ``(recording, begin, end,
label, score, channel)``.

Writing: the original's columns (spec §9.6: ``Selection View Channel Begin time (s)
End time (s) Low Freq (Hz) High Freq (Hz) Sound type Comments``), then this project's
(``Score``; multi-file tables ``Begin File``, ``File Offset (s)``, ...). ``table_rows``
gives the rows once for every format that holds them (Raven text, CSV, Parquet).

A table belongs to a recording by the name before the first ``.`` of the table's file
name (Raven's ``<recording>.Table.1.selections.txt``), or row by row by a ``Begin File``
column (Raven's multi-file tables; times within the file come from ``File Offset (s)``).
Column names are matched without regard to case. Raven repeats a selection once per
view (Spectrogram 1, Waveform 1): such rows count once.
"""

import csv
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..utils.paths import files_below

BEGIN, END, FILE, OFFSET, SELECTION, SCORE, CHANNEL = "begin time (s)", "end time (s)", "begin file", \
    "file offset (s)", "selection", "score", "channel"
TABLE_SUFFIX = ".selections.txt"


class TableError(ValueError):
    """A selection table that cannot be used; the message names it."""


@dataclass(frozen=True)
class Event:
    recording: str          # the recording's name (without extension)
    begin: float
    end: float
    label: str
    score: Optional[float] = None
    channel: int = 1

    @property
    def duration(self) -> float:
        return self.end - self.begin


TABLE_NAME = re.compile(r"(\.Table\.\d+)?\.selections\.txt$", re.IGNORECASE)
RESULT_SUFFIX = ".annotation.result.txt"          # the original's EVALUATION step: <log name> + this
LABEL_COLUMNS = ("sound type", "label", "class", "species", "call type", "annotation")


def recording_name(path: str) -> str:
    """The recording a file is about, by its name: ``rec01.Table.1.selections.txt``,
    ``rec01_predict_output.log``, ``rec01_predict_output.log.annotation.result.txt`` and
    ``day2/rec01.wav`` -> ``rec01`` (``5216.240612031500.Table.1.selections.txt`` ->
    ``5216.240612031500``: only the known ending is taken off)."""
    base = os.path.basename(path)
    if base.endswith(RESULT_SUFFIX):
        base = base[:-len(RESULT_SUFFIX)]
    if "_predict_output" in base:
        return base.split("_predict_output", 1)[0]
    found = TABLE_NAME.search(base)
    return base[:found.start()] if found else os.path.splitext(base)[0]


def label_column(header: Dict[str, int], wanted: Optional[str] = None) -> Optional[str]:
    """The label column of a table's header: ``wanted``, else the first of ``LABEL_COLUMNS``."""
    names = [wanted.strip().lower()] if wanted else list(LABEL_COLUMNS)
    return next((name for name in names if name in header), None)


def is_table(path: str) -> bool:
    return path.lower().endswith(TABLE_SUFFIX)


def find_tables(folder: str) -> List[str]:
    return files_below(folder, is_table)


def read_rows(path: str, error=None, empty_ok: bool = False):
    """``(header, rows)`` of a tab-separated table: the header maps each column's name
    (stripped, lower case) to its index; ``rows[0]`` is the header line. ``error`` (default
    ``TableError``) is raised, naming the file, where it cannot be read or is empty (an
    empty file is ``({}, [])`` with ``empty_ok``). A row shorter than the header (a name
    with a line break in it) gets empty cells, which its reader then names as malformed."""
    error = error or TableError
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))   # a cell is one line
    except (OSError, UnicodeDecodeError) as reason:
        raise error(f"{path}: cannot read the table ({reason})") from None
    if not rows and not empty_ok:
        raise error(f"{path}: an empty table (no header line)")
    width = len(rows[0]) if rows else 0
    rows = [row + [""] * (width - len(row)) for row in rows]         # a row cut short has empty cells
    return {name.strip().lower(): i for i, name in enumerate(rows[0] if rows else [])}, rows


def read_table(path: str, label_column: str = "Sound type", fallback_label: Optional[str] = None) -> List[Event]:
    """The events of one table; an error names a table without the needed columns."""
    header, rows = read_rows(path)
    wanted = label_column.strip().lower()
    label_at = header.get(wanted, header.get(fallback_label.lower()) if fallback_label else None)
    missing = [name for name, at in ((BEGIN, header.get(BEGIN)), (END, header.get(END)), (wanted, label_at))
               if at is None]
    if missing:
        raise TableError(f"{path}: no column {', '.join(repr(m) for m in missing)} (columns: "
                         f"{', '.join(c for c in rows[0] if c.strip())})")
    events, seen = [], set()
    default_recording = recording_name(path)
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            begin, end = float(row[header[BEGIN]]), float(row[header[END]])
            label = row[label_at].strip()
            score = float(row[header[SCORE]]) if SCORE in header and row[header[SCORE]].strip() else None
        except (IndexError, ValueError):
            raise TableError(f"{path}:{number}: malformed row {row!r}") from None
        try:
            channel = int(float(row[header[CHANNEL]])) if CHANNEL in header and row[header[CHANNEL]].strip() else 1
        except (IndexError, ValueError):
            channel = 1
        recording = default_recording
        if FILE in header and row[header[FILE]].strip():
            recording = recording_name(row[header[FILE]].strip())
            if OFFSET in header and row[header[OFFSET]].strip():
                offset = float(row[header[OFFSET]])
                begin, end = offset, offset + (end - begin)
        key = (row[header[SELECTION]].strip() if SELECTION in header else None, recording, begin, end, label)
        if key in seen:           # the same selection in another view
            continue
        seen.add(key)
        if end < begin:
            raise TableError(f"{path}:{number}: the selection ends before it begins ({begin} > {end})")
        events.append(Event(recording, begin, end, label, score, channel))
    return events


def events_by_recording(events: List[Event]) -> Dict[str, List[Event]]:
    grouped: Dict[str, List[Event]] = {}
    for event in events:
        grouped.setdefault(event.recording, []).append(event)
    return grouped


def read_annotations(folder: str, label_column: str = "Sound type") -> Dict[str, List[Event]]:
    """recording -> annotated events, from every selection table below ``folder``."""
    tables = find_tables(folder)
    if not tables:
        raise TableError(f"{folder}: no *.selections.txt annotation tables")
    events: List[Event] = []
    for table in tables:
        events += read_table(table, label_column)
    return events_by_recording(events)


# ----------------------------------------------------------------------- writing
HEADER_COLUMNS = ["Selection", "View", "Channel", "Begin time (s)", "End time (s)", "Low Freq (Hz)",
                  "High Freq (Hz)", "Sound type", "Comments"]
HEADER = "\t".join(HEADER_COLUMNS) + "\n"


def format_score(value: Optional[float]) -> str:
    return "" if value is None or value != value else f"{value:.4f}"


def table_rows(events: Sequence[Event], data_opts: Dict, score: bool = False, extra_columns: Sequence[str] = (),
               extra: Optional[Callable[[Event], Sequence[str]]] = None) -> Tuple[List[str], List[List[str]]]:
    """``(columns, rows)`` of a selection table, every cell as Raven shows it: the
    original's columns (Comments a single space), ``Score`` when asked, then
    ``extra_columns`` with the cells ``extra(event)``."""
    fmin, fmax = data_opts.get("fmin", ""), data_opts.get("fmax", "")
    columns = list(HEADER_COLUMNS) + (["Score"] if score else []) + list(extra_columns)
    rows = []
    for number, e in enumerate(events, start=1):
        row = [str(number), "Spectrogram_1", str(e.channel), str(e.begin), str(e.end), str(fmin), str(fmax),
               e.label, " "]
        if score:
            row.append(format_score(e.score))
        if extra_columns:
            row += [str(v) for v in extra(e)]
        rows.append(row)
    return columns, rows


def tsv(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "".join("\t".join(line) + "\n" for line in [list(columns)] + [list(r) for r in rows])


def selection_table(events: Sequence[Event], data_opts: Dict, score: bool = False) -> str:
    """A recording's Raven table (the original's layout; ``score`` adds ``Score``)."""
    return tsv(*table_rows(events, data_opts, score))
