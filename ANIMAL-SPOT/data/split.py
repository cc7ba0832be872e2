"""Train/val/test split by recording (YEAR_TAPE), stored as the original's CSV files.

Layout (compatible with the original): ``<data_dir>/<folder>/{train,val,test}.csv`` list
data_dir-relative wav paths of that folder, and the index files ``<data_dir>/train``,
``val`` and ``test`` list those CSV files (relative to data_dir). An existing split is
reused unchanged.

Fixes against the original (see CHANGES.md): index files are rewritten, not appended to;
all three index files are always written, so a split with an empty partition is still
reused; relative data folders work; a tape keeps one partition across all folders.
"""

import csv
import hashlib
import logging
import os
import random
from collections import OrderedDict, defaultdict
from typing import Callable, Dict, List, Optional, Sequence

from .filenames import class_name, tape_key
from ..utils.atomic import atomic_write

log = logging.getLogger("ANIMAL-SPOT")

PARTITIONS = ("train", "val", "test")
FRACTIONS = (0.7, 0.15, 0.15)


def split_exists(data_dir: str, partitions: Sequence[str] = PARTITIONS) -> bool:
    return all(os.path.isfile(os.path.join(data_dir, p)) for p in partitions)


def load_split(data_dir: str, partitions: Sequence[str] = PARTITIONS) -> Dict[str, List[str]]:
    """Read an existing split: partition -> data_dir-relative wav paths."""
    result = {}
    for partition in partitions:
        index_path = os.path.join(data_dir, partition)
        log.debug(f"Found dataset split file {index_path}")
        files = []
        with open(index_path, newline="") as index:
            for line in index:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                csv_path = os.path.join(data_dir, entry)
                if not os.path.isfile(csv_path):
                    log.error(f"{csv_path} is listed in {index_path} but does not exist")
                    raise ValueError(
                        f"Split file found, but csv files are missing ({csv_path}). Aborting..."
                    )
                folder = os.path.dirname(entry)
                with open(csv_path, newline="") as rows:
                    for row in csv.reader(rows):
                        if row and row[0].strip():
                            files.append(os.path.join(folder, os.path.basename(row[0].strip())))
        result[partition] = files
    log.info(f"Found csv files in {data_dir}")
    return result


def assign_tapes(
    files: Sequence[str],
    rng: random.Random,
    fixed: Optional[Dict[str, str]] = None,
    fractions: Optional[Dict[str, float]] = None,
    key_of: Callable[[str], Optional[str]] = tape_key,
) -> Dict[str, str]:
    """Group key (the tape, by default) -> partition for one folder's files.

    Each group in order of first appearance goes to a partition drawn with probability
    proportional to how many files that partition still misses (``n * fraction -
    assigned``). Groups present in ``fixed`` (decided in an earlier folder) keep their
    partition and count towards it.
    """
    fixed = fixed or {}
    fractions = fractions or dict(zip(PARTITIONS, FRACTIONS))
    partitions = list(fractions)
    counts: "OrderedDict[str, int]" = OrderedDict()
    for path in files:
        key = key_of(path)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    n = sum(counts.values())
    assigned = dict.fromkeys(partitions, 0)
    result = {}
    for key, count in counts.items():
        if key in fixed:
            chosen = fixed[key]
        else:
            missing = [n * fractions[p] - assigned[p] for p in partitions]
            r = rng.uniform(0, sum(missing))
            chosen = partitions[-1]
            for partition, miss in zip(partitions, missing):
                r -= miss
                if r < 0:
                    chosen = partition
                    break
        assigned[chosen] += count
        result[key] = chosen
    return result


def create_split(data_dir: str, files: Sequence[str], rng: random.Random,
                 fractions: Optional[Dict[str, float]] = None,
                 key_of: Callable[[str], Optional[str]] = tape_key,
                 per_folder: bool = True) -> Dict[str, List[str]]:
    """Split ``files`` (data_dir-relative) folder by folder (or as one group) and write
    the CSV/index files. A group key (tape) keeps its partition across folders."""
    fractions = fractions or dict(zip(PARTITIONS, FRACTIONS))
    partitions = list(fractions)
    by_folder: "OrderedDict[str, List[str]]" = OrderedDict()
    for path in files:
        by_folder.setdefault(os.path.dirname(path) if per_folder else "", []).append(path)
    group_partition: Dict[str, str] = {}
    result = {p: [] for p in partitions}
    index_lines = {p: [] for p in partitions}
    for folder, folder_files in by_folder.items():
        group_partition.update(assign_tapes(folder_files, rng, group_partition, fractions, key_of))
        per_partition = defaultdict(list)
        for path in folder_files:
            key = key_of(path)
            if key is not None:
                per_partition[group_partition[key]].append(path)
        for partition in partitions:
            if not per_partition[partition]:
                continue
            csv_rel = os.path.join(folder, partition + ".csv")
            log.debug(f"Generating {os.path.join(data_dir, csv_rel)}")
            with atomic_write(os.path.join(data_dir, csv_rel), "w", newline="") as handle:
                csv.writer(handle).writerows([row] for row in per_partition[partition])
            index_lines[partition].append(csv_rel)
            result[partition].extend(per_partition[partition])
    for partition in partitions:
        with atomic_write(os.path.join(data_dir, partition), "w") as handle:
            handle.writelines(line + "\n" for line in index_lines[partition])
    return result


def remove_split(data_dir: str, partitions: Sequence[str] = PARTITIONS) -> List[str]:
    """Remove a split's index files and the CSV files they list; returns what was removed."""
    removed = []
    for partition in partitions:
        index_path = os.path.join(data_dir, partition)
        if not os.path.isfile(index_path):
            continue
        with open(index_path, newline="") as index:
            listed = [line.strip() for line in index if line.strip() and not line.startswith("#")]
        for entry in listed + [partition]:
            path = os.path.join(data_dir, entry)
            if os.path.isfile(path):
                os.remove(path)
                removed.append(entry)
    return removed


def get_split(data_dir: str, files: Sequence[str], rng: random.Random) -> Dict[str, List[str]]:
    """Reuse the split in ``data_dir`` or create one from ``files``."""
    if split_exists(data_dir):
        return load_split(data_dir)
    return create_split(data_dir, files, rng)


def split_hash(split: Dict[str, List[str]]) -> str:
    """A short fingerprint of which file is in which partition (recorded in the model)."""
    digest = hashlib.sha256()
    for partition in sorted(split):
        for name in sorted(split[partition]):
            digest.update(f"{partition}\t{name}\n".encode())
    return digest.hexdigest()[:16]


def missing_partitions(split: Dict[str, List[str]], classes: Sequence[str]) -> Dict[str, List[str]]:
    """class -> partitions that hold none of its files."""
    present = {p: {class_name(f) for f in split.get(p, [])} for p in PARTITIONS}
    missing = {}
    for name in classes:
        absent = [p for p in PARTITIONS if name not in present[p]]
        if absent:
            missing[name] = absent
    return missing


def report_split(split: Dict[str, List[str]], classes: Sequence[str]) -> None:
    """Warn, before training, about classes too small to reach every partition; fail
    when a whole partition is empty."""
    for name, absent in missing_partitions(split, classes).items():
        tapes = sorted({tape_key(f) for p in PARTITIONS for f in split.get(p, []) if class_name(f) == name})
        log.warning(
            f"Class {name} has no files in partition(s) {', '.join(absent)} "
            f"({len(tapes)} tape(s): {', '.join(tapes) or 'none'}); "
            "its accuracy there cannot be measured"
        )
    empty = [p for p in PARTITIONS if not split.get(p)]
    if empty:
        raise ValueError(
            f"partition(s) {', '.join(empty)} of the split received no file; the data needs "
            "more YEAR_TAPE groups (delete the train/val/test index files to split again)"
        )


def add_to_partition(data_dir: str, files: Sequence[str], partition: str) -> List[str]:
    """Append ``files`` (data_dir-relative) to ``partition`` of the split in ``data_dir``:
    each folder's ``<partition>.csv`` and the index file (validation and test stay as they were).
    A file the split lists already, in any partition, is not added again (a rerun writes the
    same clips); returns the files added."""
    if partition not in PARTITIONS or not split_exists(data_dir):
        raise ValueError(f"--into_partition {partition}: {data_dir} holds no train/val/test split to add to")
    listed = {os.path.normpath(f) for names in load_split(data_dir).values() for f in names}
    added = [name for name in dict.fromkeys(files) if os.path.normpath(name) not in listed]
    index_path = os.path.join(data_dir, partition)
    with open(index_path) as handle:
        index = [line.strip() for line in handle if line.strip()]
    by_folder: Dict[str, List[str]] = {}
    for name in added:
        by_folder.setdefault(os.path.dirname(name), []).append(name)
    for folder, names in sorted(by_folder.items()):
        csv_rel = os.path.join(folder, partition + ".csv")
        csv_path = os.path.join(data_dir, csv_rel)
        old = ""
        if os.path.isfile(csv_path):
            with open(csv_path) as handle:
                old = handle.read()
        with atomic_write(csv_path, "w", newline="") as handle:
            handle.write(old + "".join(n + "\n" for n in names))
        if csv_rel not in index:
            index.append(csv_rel)
    with atomic_write(index_path, "w") as handle:
        handle.writelines(line + "\n" for line in index)
    return added
