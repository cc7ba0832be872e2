"""Cut annotated selections of long recordings into training clips named as ANIMAL-SPOT
expects: ``<out>/<CLASS>/<CLASS>-raven_<ID>_<YEAR>_<TAPE>_<STARTMS>_<ENDMS>.wav``.

    python TRAINING/clips_from_raven.py --recordings DIR --annotations DIR --out DIR \
        [--label_column "Sound type"] [--year 2019] [--tape T07] [--noise_clips 20] [--seed 0]

CLASS comes from the label column (characters ANIMAL-SPOT uses as separators removed).
YEAR and TAPE come from the recording's name where it carries them (a ``_``-separated
field that is a year, 1950..2199, and the field after it), else from --year / --tape,
else from the recording file's modification year and its name without ``_`` and ``-``.
``--noise_clips N`` adds N noise clips per recording from stretches that no selection
touches (as long as the recording's median selection). Clips keep the recording's
sample rate and channels.

Reviewed tables (``review.py``'s ``tables/``, with a ``Verified`` column): rows verified
``yes`` become clips of their ``Reviewed label`` (else their ``Sound type``); ``no``,
``unsure`` and unreviewed rows are left out, or ``no`` rows become ``noise`` clips with
``--rejected_as_noise``. Tables without a ``Verified`` column are used as they are.

``--into_partition train`` (when ``--out`` already holds a split): the new clips join that
partition of the existing split (its per-folder CSV and index file), so a retrained
model is tested on the same validation and test clips as before.
"""

import argparse
import logging
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ANIMAL-SPOT"))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from data.audio_io import AudioFileError, read_audio, recording_files  # noqa: E402
from evaluation.raven import (Event, TableError, events_by_recording, find_tables, read_table,  # noqa: E402
                              recording_name)
from utils.atomic import OutputError, atomic_write  # noqa: E402

log = logging.getLogger("ANIMAL-SPOT")
SEPARATORS = re.compile(r"[-_\s/\\.]")


def class_of(label: str) -> str:
    name = SEPARATORS.sub("", label)
    if not name:
        raise TableError(f"label {label!r} leaves no class name once separators are removed")
    return name


def year_and_tape(path: str, year=None, tape=None):
    fields = os.path.splitext(os.path.basename(path))[0].split("_")
    for i, value in enumerate(fields[:-1]):
        if value.isdigit() and 1950 <= int(value) <= 2199 and fields[i + 1]:
            return value, SEPARATORS.sub("", fields[i + 1]) or "TAPE"
    found_year = year or time.strftime("%Y", time.localtime(os.path.getmtime(path)))
    found_tape = tape or SEPARATORS.sub("", os.path.splitext(os.path.basename(path))[0]) or "TAPE"
    return str(found_year), SEPARATORS.sub("", str(found_tape))


def write_clip(path: str, data: np.ndarray, rate: int) -> None:
    with atomic_write(path, "wb", durable=False) as handle:
        sf.write(handle, data, rate, format="WAV", subtype="PCM_16" if data.dtype != np.float32 else "FLOAT")


def noise_spans(selections, seconds: float, length: float, count: int, rng: random.Random):
    """``count`` stretches of ``length`` s that touch no selection (fewer where none fit)."""
    busy = sorted((s.begin, s.end) for s in selections)
    free, cursor = [], 0.0
    for begin, end in busy + [(seconds, seconds)]:
        if begin - cursor >= length:
            free.append((cursor, begin))
        cursor = max(cursor, end)
    spans = []
    for _ in range(count):
        usable = [(a, b) for a, b in free if b - a >= length]
        if not usable:
            break
        a, b = rng.choice(usable)
        start = rng.uniform(a, b - length)
        spans.append((start, start + length))
        free.remove((a, b))
        free += [(a, start), (start + length, b)]
    return spans


def reviewed_events(path: str, label_column: str, rejected_as_noise: bool):
    """The events of one table; for a reviewed table only the verified rows (relabelled)
    and, when asked, the rejected ones as noise."""
    import csv

    events = read_table(path, label_column)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t")]
    header = {name.strip().lower(): i for i, name in enumerate(rows[0])}
    if "verified" not in header:
        return events
    verdicts = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if len(verdicts) != len(events):
        raise TableError(f"{path}: a reviewed table must not repeat selections in several views")
    kept = []
    for event, row in zip(events, verdicts):
        cell = lambda name: row[header[name]].strip() if name in header and header[name] < len(row) else ""
        verified = cell("verified").lower()
        if verified == "yes":
            kept.append(Event(event.recording, event.begin, event.end, cell("reviewed label") or event.label,
                              event.score, event.channel))
        elif verified == "no" and rejected_as_noise:
            kept.append(Event(event.recording, event.begin, event.end, "noise", event.score, event.channel))
    return kept


def read_clip_tables(folder: str, label_column: str, rejected_as_noise: bool):
    tables = find_tables(folder)
    if not tables:
        raise TableError(f"{folder}: no *.selections.txt annotation tables")
    events = []
    for table in tables:
        events += reviewed_events(table, label_column, rejected_as_noise)
    return events_by_recording(events)


def cut(args) -> int:
    annotations = read_clip_tables(args.annotations, args.label_column, args.rejected_as_noise)
    recordings = {recording_name(p): p for p in recording_files(args.recordings)}
    missing = sorted(set(annotations) - set(recordings))
    if missing:
        raise TableError(f"annotation tables for recording(s) not found in {args.recordings}: {', '.join(missing)}")
    rng, written, number = random.Random(args.seed), 0, 0
    new_files = []
    for recording, selections in sorted(annotations.items()):
        path = recordings[recording]
        data, rate = read_audio(path)
        year, tape = year_and_tape(path, args.year, args.tape)
        pieces = [(class_of(s.label), s.begin, s.end) for s in selections]
        if args.noise_clips:
            length = float(np.median([s.end - s.begin for s in selections])) if selections else 1.0
            pieces += [("noise", a, b) for a, b in noise_spans(selections, len(data) / rate, length,
                                                                args.noise_clips, rng)]
        for name, begin, end in pieces:
            first, last = int(round(begin * rate)), min(len(data), int(round(end * rate)))
            if last <= first:
                log.warning(f"{path}: selection {begin}-{end} s is empty; skipped")
                continue
            number += 1
            file_name = f"{name}-raven_{number:05d}_{year}_{tape}_{int(round(begin * 1000))}_{int(round(end * 1000))}.wav"
            write_clip(os.path.join(args.out, name, file_name), data[first:last], rate)
            written += 1
            new_files.append(os.path.join(name, file_name))
    log.info(f"{written} clip(s) written to {args.out}")
    if args.into_partition:
        add_to_partition(args.out, new_files, args.into_partition)
        log.info(f"{len(new_files)} clip(s) added to the {args.into_partition} partition of the split in {args.out}")
    return 0


def add_to_partition(data_dir: str, files, partition: str) -> None:
    """Append ``files`` (data_dir-relative) to ``partition`` of the split in ``data_dir``:
    each folder's ``<partition>.csv`` and the index file."""
    from data.split import PARTITIONS, split_exists

    if partition not in PARTITIONS or not split_exists(data_dir):
        raise ValueError(f"--into_partition {partition}: {data_dir} holds no train/val/test split to add to")
    index_path = os.path.join(data_dir, partition)
    with open(index_path) as handle:
        index = [line.strip() for line in handle if line.strip()]
    by_folder = {}
    for name in files:
        by_folder.setdefault(os.path.dirname(name), []).append(name)
    for folder, names in sorted(by_folder.items()):
        csv_rel = os.path.join(folder, partition + ".csv")
        csv_path = os.path.join(data_dir, csv_rel)
        old = open(csv_path).read() if os.path.isfile(csv_path) else ""
        with atomic_write(csv_path, "w", newline="") as handle:
            handle.write(old + "".join(n + "\n" for n in names))
        if csv_rel not in index:
            index.append(csv_rel)
    with atomic_write(index_path, "w") as handle:
        handle.writelines(line + "\n" for line in index)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s|%(levelname).1s|%(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", required=True, help="folder of the annotated recordings (.wav, .flac)")
    p.add_argument("--annotations", required=True, help="folder of Raven selection tables")
    p.add_argument("--out", required=True, help="where the clips go (one sub-folder per class)")
    p.add_argument("--label_column", default="Sound type", help="the label column (default 'Sound type')")
    p.add_argument("--year", default=None, help="YEAR for recordings whose names carry none")
    p.add_argument("--tape", default=None, help="TAPE for recordings whose names carry none")
    p.add_argument("--noise_clips", type=int, default=0, help="noise clips per recording from unannotated stretches")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise clip positions")
    p.add_argument("--rejected_as_noise", action="store_true",
                   help="reviewed tables: rows verified 'no' become noise clips")
    p.add_argument("--into_partition", choices=("train", "val", "test"), default=None,
                   help="add the clips to this partition of the split already in --out")
    args = p.parse_args(argv)
    try:
        return cut(args)
    except (TableError, AudioFileError, FileNotFoundError, OutputError, ValueError) as error:
        log.error(str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
