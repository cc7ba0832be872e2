"""A season on many processes and machines, accountable recording by recording.

* Shares: the recordings are dealt to the processes of a ``torchrun`` job (or the shares
  of ``--shard I/N``) by audio duration, longest first to the least loaded (the same
  deal in every process, so every recording has exactly one owner).
* Journals: each process appends to its own ``predict_journal.<process>.jsonl`` in the
  output folder (one writer per file, so safe on shared file systems): the recordings it
  plans, then per recording ``done`` (audio seconds, windows, wall seconds),
  ``skipped`` (outputs complete) or ``failed`` (the reason in one line). ``report``
  merges them (the newest line per recording wins) into the season's account.
* ``predict_run.json``: what the run decided with (rule, event settings, classes, the
  recordings in order, time stamps), so ``predict.py --merge`` writes the combined table
  of a job array exactly as one process would have.
* Time stamps: the recorder's start time from the file name (``data.timestamps``).
"""

import json
import os
import socket
from collections import OrderedDict
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile as sf

from ..data.remote import filesystem, is_remote
from ..data.timestamps import start_time  # noqa: F401  (its old place)
from .records import RUN_FILE, RunFile  # noqa: F401  (RUN_FILE: its old place)

JOURNAL_PREFIX = "predict_journal."


# --------------------------------------------------------------------------- shares
def weights(paths: Sequence[str]) -> List[float]:
    """The work of each recording: its duration (seconds) where local, its size (bytes)
    where remote (proportional to the duration for files of one format)."""
    remote = any(is_remote(p) for p in paths)
    out = []
    for path in paths:
        try:
            if remote:
                if is_remote(path):
                    fs, inner = filesystem(path)
                    out.append(float(fs.size(inner) or 0))
                else:
                    out.append(float(os.path.getsize(path)))
            else:
                out.append(float(sf.info(path).duration))
        except Exception:              # an unreadable recording is its owner's failure to report
            out.append(0.0)
    return out


def deal(paths: Sequence[str], count: int, work: Optional[Sequence[float]] = None) -> List[List[str]]:
    """``count`` shares balanced by work (longest first to the least loaded); each share
    keeps the recordings' order."""
    work = list(work) if work is not None else weights(paths)
    loads = [0.0] * count
    owner = {}
    for index in sorted(range(len(paths)), key=lambda i: (-work[i], i)):
        chosen = min(range(count), key=lambda k: (loads[k], k))
        owner[index] = chosen
        loads[chosen] += work[index]
    return [[p for i, p in enumerate(paths) if owner[i] == k] for k in range(count)]


def share(files: Sequence[str], shard: Optional[str], processes) -> Tuple[List[str], str, bool]:
    """``(this process's recordings, its journal name, whether the run is shared)``: all of
    them, its share of a ``torchrun`` job, or the I-th of N shares (``--shard I/N``)."""
    parsed = parse_shard(shard)
    if parsed and processes.distributed:
        raise ValueError("--shard and torchrun divide the recordings in two ways: use one of them")
    if processes.distributed:
        return deal(files, processes.world)[processes.rank], f"rank{processes.rank + 1}of{processes.world}", True
    if parsed:
        return deal(files, parsed[1])[parsed[0] - 1], f"shard{parsed[0]}of{parsed[1]}", True
    return list(files), "all", False


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if not text:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text}: expected I/N, e.g. 3/10") from None
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: I must be between 1 and N")
    return index, count


# -------------------------------------------------------------------------- journal
class SeasonJournal:
    """One process's journal: one JSON line per event, flushed and synced."""

    def __init__(self, output_dir: str, tag: str, prefix: str = JOURNAL_PREFIX):
        self.path = os.path.join(output_dir, f"{prefix}{tag}.jsonl")
        self.tag = tag

    def write(self, event: str, **fields) -> None:
        entry = {"event": event, "process": self.tag, "host": socket.gethostname(),
                 "time": datetime.now().isoformat(timespec="seconds"), **fields}
        with open(self.path, "ab") as handle:
            handle.write((json.dumps(entry) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())


def read_journals(output_dir: str, prefix: str = JOURNAL_PREFIX) -> Tuple[List[dict], List[str]]:
    """Every journal line of the folder (in time order), and lines that could not be read."""
    entries, problems = [], []
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"{output_dir}: no such folder")
    for name in sorted(os.listdir(output_dir)):
        if not (name.startswith(prefix) and name.endswith(".jsonl")):
            continue
        with open(os.path.join(output_dir, name), encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    problems.append(f"{name}:{number}: cut short (the process was stopped while writing)")
    entries.sort(key=lambda e: e.get("time", ""))
    return entries, problems


def season_status(entries: List[dict]) -> "OrderedDict[str, dict]":
    """recording -> its newest done / skipped / failed line (or ``missing``)."""
    status: "OrderedDict[str, dict]" = OrderedDict()
    for entry in entries:
        if entry["event"] == "planned":
            for recording in entry["recordings"]:
                status.setdefault(recording, {"event": "missing", "recording": recording})
        elif entry["event"] in ("done", "skipped", "failed"):
            status[entry["recording"]] = entry
    return status


def report_lines(output_dir: str, prefix: str = JOURNAL_PREFIX) -> Tuple[List[str], bool]:
    """The season's account, and whether it is complete (nothing failed or missing)."""
    entries, problems = read_journals(output_dir, prefix)
    if not entries:
        raise FileNotFoundError(f"{output_dir}: no journals ({prefix}*.jsonl)")
    status = season_status(entries)
    if RunFile.exists(output_dir):        # the run's recordings: also what no process got to plan, nothing else
        run = RunFile.read(output_dir).recordings
        status = OrderedDict((r, status.get(r, {"event": "missing", "recording": r})) for r in run)
    done = [e for e in status.values() if e["event"] in ("done", "skipped")]
    failed = [e for e in status.values() if e["event"] == "failed"]
    missing = [e for e in status.values() if e["event"] == "missing"]
    hours = sum(e.get("audio_seconds", 0.0) for e in done) / 3600
    lines = [f"season of {output_dir}: {len({e['process'] for e in entries} - {'run'})} process journal(s)",
             f"recordings: {len(done)} done, {len(failed)} failed, {len(missing)} missing",
             f"audio: {hours:.2f} h predicted"]
    if failed:
        lines.append("failed:")
        lines += [f"  {e['recording']}: {e.get('reason', '')}" for e in failed]
    if missing:
        lines.append("missing (planned, never finished; rerun the same command):")
        lines += [f"  {e['recording']}" for e in missing]
    per_process: Dict[str, List[dict]] = {}
    for entry in entries:
        if entry["event"] == "done" and entry.get("recording") in status:
            per_process.setdefault(entry["process"], []).append(entry)
    if per_process:
        lines.append("per process (recordings predicted in its runs, hours of audio, real-time factor):")
        for tag, rows in sorted(per_process.items()):
            audio = sum(r.get("audio_seconds", 0.0) for r in rows)
            wall = sum(r.get("wall_seconds", 0.0) for r in rows)
            factor = f"{audio / wall:.1f}x" if wall > 0 else "n/a"
            lines.append(f"  {tag}: {len(rows)} recording(s), {audio / 3600:.2f} h, real-time factor {factor}")
    lines += [f"note: {p}" for p in problems]
    return lines, not failed and not missing

