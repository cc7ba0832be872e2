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
* Time stamps: the recorder's start time from the file name (``--timestamp_format``, or
  the common styles: AudioMoth ``20240612_031500``, ``2024-06-12_03-15-00``, SoundTrap
  ``5216.240612031500``), for Raven's ``Begin Date Time``.
"""

import json
import os
import re
import socket
import time
from collections import OrderedDict
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Tuple

from utils.atomic import atomic_write_text

JOURNAL_PREFIX, RUN_FILE = "predict_journal.", "predict_run.json"


# --------------------------------------------------------------------------- shares
def weights(paths: Sequence[str]) -> List[float]:
    """The work of each recording: its duration (seconds) where local, its size (bytes)
    where remote (proportional to the duration for files of one format)."""
    import soundfile as sf

    from data.remote import filesystem, is_remote

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

    def __init__(self, output_dir: str, tag: str):
        self.path = os.path.join(output_dir, f"{JOURNAL_PREFIX}{tag}.jsonl")
        self.tag = tag

    def write(self, event: str, **fields) -> None:
        entry = {"event": event, "process": self.tag, "host": socket.gethostname(),
                 "time": datetime.now().isoformat(timespec="seconds"), **fields}
        with open(self.path, "ab") as handle:
            handle.write((json.dumps(entry) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())


def read_journals(output_dir: str) -> Tuple[List[dict], List[str]]:
    """Every journal line of the folder (in time order), and lines that could not be read."""
    entries, problems = [], []
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"{output_dir}: no such folder")
    for name in sorted(os.listdir(output_dir)):
        if not (name.startswith(JOURNAL_PREFIX) and name.endswith(".jsonl")):
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


def report_lines(output_dir: str) -> Tuple[List[str], bool]:
    """The season's account, and whether it is complete (nothing failed or missing)."""
    entries, problems = read_journals(output_dir)
    if not entries:
        raise FileNotFoundError(f"{output_dir}: no prediction journals ({JOURNAL_PREFIX}*.jsonl)")
    if os.path.isfile(os.path.join(output_dir, RUN_FILE)):     # the whole season, also what no process got to plan
        entries.insert(0, {"event": "planned", "recordings": read_run(output_dir)["recordings"], "process": "run"})
    status = season_status(entries)
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
        if entry["event"] == "done":
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


# ----------------------------------------------------------------------- run file
def write_run(output_dir: str, settings: dict) -> None:
    path = os.path.join(output_dir, RUN_FILE)
    text = json.dumps(settings, indent=1, sort_keys=True)
    if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text:
        atomic_write_text(path, text)


def read_run(output_dir: str) -> dict:
    path = os.path.join(output_dir, RUN_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{output_dir}: no {RUN_FILE}; --merge needs a folder written by predict.py --shard")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------------- time stamps
STYLES = [  # (pattern, strptime format of the groups joined)
    (r"(?<!\d)(\d{8})[_T-](\d{6})(?!\d)", "%Y%m%d%H%M%S"),                                  # AudioMoth, SITE_...
    (r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_ T](\d{2})[-:_](\d{2})[-:_](\d{2})(?!\d)", "%Y%m%d%H%M%S"),
    (r"\.(\d{12})(?=\.|$)", "%y%m%d%H%M%S"),                                                 # SoundTrap
    (r"(?<!\d)(\d{6})[_-](\d{6})(?!\d)", "%y%m%d%H%M%S"),
]
TOKENS = {"%Y": r"\d{4}", "%y": r"\d{2}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}",
          "%S": r"\d{2}", "%j": r"\d{3}", "%f": r"\d{1,6}", "%%": "%"}


def format_pattern(fmt: str) -> str:
    """A strftime pattern as a regular expression that finds it in a file name."""
    out, i = "", 0
    while i < len(fmt):
        token = fmt[i:i + 2]
        if token in TOKENS:
            out += TOKENS[token]
            i += 2
        elif token.startswith("%"):
            raise ValueError(f"--timestamp_format {fmt}: {token} is not supported (use %Y %y %m %d %H %M %S %j %f)")
        else:
            out += re.escape(fmt[i])
            i += 1
    return out


def start_time(path: str, fmt: Optional[str] = None) -> Optional[datetime]:
    """The recording's start time from its file name, or None."""
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    if fmt:
        match = re.search(format_pattern(fmt), stem)
        if not match:
            return None
        try:
            return datetime.strptime(match.group(0), fmt)
        except ValueError:
            return None
    for pattern, layout in STYLES:
        match = re.search(pattern, stem)
        if match:
            try:
                value = datetime.strptime("".join(match.groups()), layout)
            except ValueError:
                continue
            if 1980 <= value.year <= 2100:
                return value
    return None


def wait_for(paths: Sequence[str], seconds: float = 600) -> None:
    """Until every file exists (the other processes' outputs on a shared file system)."""
    end = time.time() + seconds
    while time.time() < end and not all(os.path.isfile(p) for p in paths):
        time.sleep(0.2)
