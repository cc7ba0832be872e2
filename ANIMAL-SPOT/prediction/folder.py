"""A prediction folder: what ``predict.py`` writes, and the one way to read it back.

The review, ``EVALUATION/score.py``, ``predict.py --merge`` and a rerun that skips
finished recordings all read a folder here. Per recording (its path below the folder
without the output's ending, e.g. ``site1/rec``) the folder may hold its prediction logs
(one, or one per channel: ``<name>_ch<C>_predict_output.log``), its Raven table (ours,
the original's ``<log>.annotation.result.txt``, or any selection table), and the other
formats. ``combined.*`` tables span recordings. ``predict_run.json`` says what the run
decided with, the journals what it did.

**One rule: the log wins.** It holds every window's probabilities and the run's decision;
a recording's events are decided from its logs with the run's rule and event settings
(``predict_run.json``; for a log without one, as its header says: the original's
threshold). A table stands for a recording only where there is no log.
"""

import contextlib
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.sources import file_stem, output_name, relative_name
from ..evaluation.log_format import logged_recording
from ..evaluation.raven import RESULT_SUFFIX, Event, TableError, label_column, read_rows, read_table, recording_name
from .decisions import DecisionRule, PostProcessing, log_events
from .records import RunFile
from .sinks import LogSink
from .tables import FORMATS, RavenSink

CHANNEL_LOG = re.compile(r"^(.*)_ch(\d+)$")
OUTPUT_TABLES = [RavenSink] + list(FORMATS.values())
TABLE_RANK = {"table": 0, "result": 1, "other": 2}


@dataclass
class Outputs:
    """What the folder holds of one recording."""

    key: str                                          # path below the folder, e.g. "site1/rec"
    logs: Dict[Optional[int], str] = field(default_factory=dict)     # channel (None: one log) -> path
    table: Optional[str] = None
    table_kind: Optional[str] = None                  # table | result (the original's) | other

    @property
    def source(self) -> str:
        """``log`` where there is one (it wins), else the table's kind."""
        return "log" if self.logs else self.table_kind

    @property
    def stem(self) -> str:
        return os.path.basename(self.key)


def table_kind(name: str) -> Optional[str]:
    if name.endswith(RESULT_SUFFIX):
        return "result"
    if name.endswith(RavenSink.suffix):
        return "table"
    if name.lower().endswith(".selections.txt"):
        return "other"
    return None


class PredictionFolder:
    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: no such folder")
        self.root = root
        self.run: Optional[RunFile] = RunFile.read(root) if RunFile.exists(root) else None

    # ------------------------------------------------------------------ files
    def scan(self) -> Tuple[Dict[str, Outputs], List[str]]:
        """Every recording's outputs (sorted by key), and the combined tables."""
        found: Dict[str, Outputs] = {}
        combined: List[str] = []
        each = self.each
        stems = self.recording_stems()
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            names = set(files)
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = os.path.join(folder, name)
                below = os.path.relpath(folder, self.root)
                if name.startswith("combined.") and table_kind(name):
                    combined.append(path)
                    continue
                if name.endswith(LogSink.suffix):
                    full = name[:-len(LogSink.suffix)]
                    stem, channel = log_stem(full, names, folder)
                    if channel is not None and not each:
                        if full in stems or (not stems and LogSink.name(stem) not in names):
                            stem, channel = full, None              # a recording named so
                        else:
                            continue          # a channel log of an earlier --channels each run
                    self._entry(found, below, stem).logs[channel] = path
                    continue
                kind = table_kind(name)
                if kind is None:
                    continue
                entry = self._entry(found, below, recording_name(name))
                if entry.table is None or TABLE_RANK[kind] < TABLE_RANK[entry.table_kind]:
                    entry.table, entry.table_kind = path, kind
        for entry in found.values():
            if len(entry.logs) > 1:
                entry.logs.pop(None, None)    # an earlier run's single log beside this run's channel logs
        names = self.run.output_names() if self.run is not None else None
        if names is not None:                 # the run's recordings, nothing else
            keep = set(names.values())
            found = {key: entry for key, entry in found.items() if key in keep}
        return dict(sorted(found.items())), combined

    @property
    def each(self) -> bool:
        """Whether logs may be one per channel: a ``--channels each`` run, or no run file."""
        return self.run is None or self.run.channels == "each"

    def recording_stems(self) -> set:
        """The output names of the run's recordings (empty without a run file)."""
        return {file_stem(str(path)) for path in (self.run.recordings if self.run is not None else ())}

    @staticmethod
    def _entry(found: Dict[str, Outputs], below: str, stem: str) -> Outputs:
        key = stem if below == "." else os.path.join(below, stem)
        return found.setdefault(key, Outputs(key))

    def outputs(self) -> Dict[str, Outputs]:
        return self.scan()[0]

    def find(self, key: str) -> Optional[Outputs]:
        """One recording's outputs by the names a run gives them (no listing of the folder)."""
        folder = os.path.join(self.root, os.path.dirname(key))
        stem, found = os.path.basename(key), Outputs(key)
        single = os.path.join(folder, LogSink.name(stem))
        channel = 1
        while self.each and os.path.isfile(os.path.join(folder, LogSink.name(stem, channel))):
            found.logs[channel] = os.path.join(folder, LogSink.name(stem, channel))
            channel += 1
        if len(found.logs) < 2 or not one_recording(found.logs[1], found.logs[2]):
            found.logs.clear()                # a channel set: two logs at least, of one recording
        if not found.logs and os.path.isfile(single):
            found.logs[None] = single
        for name, kind in ((stem + RavenSink.suffix, "table"), (LogSink.name(stem) + RESULT_SUFFIX, "result")):
            if found.table is None and os.path.isfile(os.path.join(folder, name)):
                found.table, found.table_kind = os.path.join(folder, name), kind
        return found if found.logs or found.table else None

    # ---------------------------------------------------------------- decisions
    def rule(self, log=None) -> DecisionRule:
        """The run's rule (``predict_run.json``), else the log header's threshold, else 0.5."""
        if self.run is not None:
            return self.run.rule
        return DecisionRule(log.threshold if log is not None and log.threshold is not None else 0.5)

    def post(self) -> PostProcessing:
        return self.run.post if self.run is not None else PostProcessing()

    def events(self, outputs: Outputs, rule: Optional[DecisionRule] = None,
               post: Optional[PostProcessing] = None) -> List[Event]:
        """The recording's events, by the rule of this module: decided from its logs (with
        ``rule`` and ``post`` where given, else the run's), else read from its table."""
        if outputs.logs:
            events = []
            for channel, path in sorted(outputs.logs.items(), key=lambda item: item[0] or 0):
                parsed = LogSink.read(path)
                found = log_events(parsed, rule or self.rule(parsed), post or self.post(), outputs.stem)
                events += [e if channel is None else dataclasses.replace(e, channel=channel) for e in found]
            return sorted(events, key=lambda e: (e.begin, e.channel))
        if outputs.table is None:
            return []
        header, _ = read_rows(outputs.table, TableError)
        column = label_column(header)
        if column is None:
            raise TableError(f"{outputs.table}: no label column (one of 'Sound type', 'Label', 'Class', ...)")
        return read_table(outputs.table, column)


def log_stem(stem: str, names, folder: str) -> Tuple[str, Optional[int]]:
    """``rec_ch2`` -> (``rec``, 2) where the folder holds the logs of the first two channels
    and they name one recording (a ``--channels each`` run writes one per channel of a
    recording with two or more); else the stem itself (a recording named ``rec_ch2``, or
    mono ``tape_ch1.wav`` and ``tape_ch2.wav``, whose logs name two recordings)."""
    found = CHANNEL_LOG.match(stem)
    if found and all(LogSink.name(found.group(1), c) in names for c in (1, 2)):
        first, second = (os.path.join(folder, LogSink.name(found.group(1), c)) for c in (1, 2))
        if one_recording(first, second):
            return found.group(1), int(found.group(2))
    return stem, None


def one_recording(first: str, second: str) -> bool:
    """Whether two logs name the same recording on their first lines."""
    named = logged_recording(first)
    return named is not None and named == logged_recording(second)


# ------------------------------------------------------------------ a rerun's folder
def output_files(root: str, key: str, labels: Sequence[str] = (), keep: Sequence[str] = ()) -> List[str]:
    """The files a run writes for the recording ``key`` (its logs, channel logs, tables,
    other formats and the ``--visualize`` PDFs of ``labels``), as far as they are in the
    folder; never the files of the output names ``keep`` (a current ``rec_ch1`` beside a
    gone ``rec``)."""
    folder, stem = os.path.join(root, os.path.dirname(key)), os.path.basename(key)
    if not os.path.isdir(folder):
        return []
    own = {LogSink.name(stem), LogSink.name(stem) + RESULT_SUFFIX} | {stem + sink.suffix for sink in OUTPUT_TABLES}
    channel = re.compile(re.escape(stem) + r"_ch(\d+)" + re.escape(LogSink.suffix) + "$")
    kept = {os.path.basename(k) for k in keep if os.path.dirname(k) == os.path.dirname(key)}
    pdf = re.compile(r"^net_input_spec_\d+_(" + "|".join(re.escape(label) for label in labels) + ")_"
                     + re.escape(stem) + r"\.pdf$") if labels else None

    def mine(name: str) -> bool:
        found = channel.match(name)
        if found:
            return f"{stem}_ch{found.group(1)}" not in kept
        return name in own or bool(pdf and pdf.match(name))
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if mine(name))


def run_keys(run: RunFile) -> Dict[str, str]:
    """recording -> its output name (an older run file without them: from its input and name)."""
    return run.output_names() or {path: output_name(relative_name(run.input_file or "", path))
                                  for path in run.recordings}


def prepare_folder(output_dir: str, run: RunFile, overwrite: bool, log, main: bool = True) -> RunFile:
    """A run's folder holds one run's decisions and says which recordings it holds:
    * other decision settings (or another ``--input_file``) than the folder's run are
      refused unless ``overwrite``;
    * recordings of the earlier run whose output names are not this run's: with
      ``overwrite`` their outputs are removed (the folder then holds exactly this run);
      else those with outputs are kept, named in the log, and stay in the run file (the
      review, ``score.py`` and ``--report`` read the run file's recordings only).
    ``main``: the process that removes files (the others of a job only read).
    Returns the run file as written."""
    earlier = RunFile.read(output_dir) if RunFile.exists(output_dir) else None
    if earlier is None:
        if main:
            run.write(output_dir)
        return run
    changed = run.changes(earlier)
    if changed and not overwrite:
        raise ValueError(f"--output_dir {output_dir} holds a run with other settings ({', '.join(changed)}); "
                         "--overwrite redoes every recording with these (and removes the outputs of recordings not "
                         "in this run), or choose another --output_dir")
    names, current = run_keys(earlier), set(run_keys(run).values())
    labels = sorted((earlier.classes or {}).keys())
    gone = [path for path in earlier.recordings if names[path] not in current]
    if gone and overwrite:
        removed = 0
        for path in gone if main else []:
            for found in output_files(output_dir, names[path], labels, tuple(current)):
                with contextlib.suppress(FileNotFoundError):        # a shard of the same job removed it first
                    os.remove(found)
                    removed += 1
        log.info(f"--overwrite: removed the outputs of {len(gone)} recording(s) of the earlier run that are not in "
                 f"this one ({removed} file(s)): " + ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else ""))
    elif gone:
        kept = [path for path in gone if output_files(output_dir, names[path], labels, tuple(current))]
        if kept:
            run = dataclasses.replace(run, recordings=tuple(kept) + run.recordings,
                                      outputs=tuple(names[p] for p in kept) + tuple(run_keys(run).values()))
            log.warning(f"--output_dir {output_dir} keeps the outputs of {len(kept)} recording(s) of an earlier run "
                        "that are not in this one (the folder's tables, review and report still count them; "
                        "--overwrite removes them): " + ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""))
    if main:
        run.write(output_dir)
    return run
