"""ANIMAL-SPOT file names: ``CLASSNAME-LABELINFO_ID_YEAR_TAPE_STARTMS_ENDMS.wav``.

Only CLASSNAME, YEAR and TAPE carry meaning. CLASSNAME is everything before the first
``-`` of the base name; YEAR and TAPE are the 4th and 3rd ``_``-separated fields from the
end of the path relative to the data folder (after collapsing ``__``), so extra
underscores earlier in the name or in folder names are harmless.
"""

import logging
import os
from typing import Iterable, List, Optional, Sequence

import soundfile as sf

log = logging.getLogger("ANIMAL-SPOT")

YEAR_MIN, YEAR_MAX = 1950, 2199
BKP_DIR = "bkp"


class FileNameError(ValueError):
    """A file name breaks the ANIMAL-SPOT naming rule."""


def class_name(path: str) -> str:
    """CLASSNAME of a file: the base name up to its first ``-``."""
    base = os.path.basename(path)
    if "-" not in base:
        raise FileNameError(
            f"{path}: file name has no '-'; ANIMAL-SPOT names are "
            "CLASSNAME-LABELINFO_ID_YEAR_TAPE_STARTMS_ENDMS.wav (the first '-' ends CLASSNAME)"
        )
    name = base.split("-", 1)[0]
    if not name:
        raise FileNameError(f"{path}: empty CLASSNAME before the first '-'")
    return name


def tape_problem(rel_path: str) -> Optional[str]:
    """Why ``rel_path`` has no usable YEAR_TAPE key, or None when it has one."""
    fields = _fields(rel_path)
    if len(fields) < 4:
        return "fewer than 4 '_'-separated fields (YEAR and TAPE cannot be found)"
    year = fields[-4]
    try:
        value = int(year)
    except ValueError:
        return f"YEAR field {year!r} is not an integer"
    if not YEAR_MIN <= value <= YEAR_MAX:
        return f"YEAR {value} is outside {YEAR_MIN}..{YEAR_MAX}"
    return None


def tape_key(rel_path: str) -> Optional[str]:
    """``YEAR_TAPE`` (tape upper-cased) of a data_dir-relative path, or None if unusable."""
    if tape_problem(rel_path) is not None:
        return None
    fields = _fields(rel_path)
    return fields[-4] + "_" + fields[-3].upper()


def _fields(rel_path: str) -> List[str]:
    text = rel_path.replace(os.sep, "/")
    while "__" in text:
        text = text.replace("__", "_")
    return text.split("_")


def is_backup_dir(name: str) -> bool:
    """Folders holding files set aside by --filter_broken_audio (``bkp`` or ``*.bkp``)."""
    return name == BKP_DIR or name.endswith(".bkp")


def find_audio_files(data_dir: str) -> List[str]:
    """All ``*.wav`` (any case) below ``data_dir`` (relative paths, sorted), skipping hidden
    entries and backup folders."""
    found = []
    for root, dirs, files in os.walk(data_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if is_backup_dir(os.path.basename(root)) and root != data_dir:
            continue
        for name in sorted(files):
            if name.lower().endswith(".wav") and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(root, name), data_dir))
    return sorted(found)


def usable_files(rel_paths: Iterable[str]) -> List[str]:
    """Files with a valid YEAR_TAPE key; the others are reported (name, reason, count)."""
    kept, skipped = [], []
    for path in rel_paths:
        problem = tape_problem(path)
        if problem is None:
            kept.append(path)
        else:
            skipped.append((path, problem))
    for path, problem in skipped:
        log.warning(f"Skipping {path}: {problem}")
    if skipped:
        log.warning(f"Skipped {len(skipped)} file(s) without a valid YEAR_TAPE in the name")
    return kept


def discover_classes(rel_paths: Iterable[str]) -> List[str]:
    """Sorted (code-point order) class names over the given files."""
    return sorted({class_name(p) for p in rel_paths})


def peak_amplitude(path: str) -> float:
    """Largest absolute sample value of a file (read in blocks)."""
    peak = 0.0
    for block in sf.blocks(path, blocksize=1 << 18, dtype="float32", always_2d=True):
        if block.size:
            peak = max(peak, float(abs(block).max()))
    return peak


def filter_broken_audio(data_dir: str, rel_paths: Sequence[str], threshold: float = 1e-3) -> List[str]:
    """Move near-silent files (absolute peak below ``threshold``) and unreadable ones to a
    ``bkp`` folder beside them, where discovery no longer finds them. Returns the moved
    relative paths."""
    moved = []
    for rel in rel_paths:
        path = os.path.join(data_dir, rel)
        try:
            broken = peak_amplitude(path) < threshold
        except Exception as error:
            log.warning(f"{path}: unreadable ({error}); moving it aside")
            broken = True
        if broken:
            target_dir = os.path.join(os.path.dirname(path), BKP_DIR)
            os.makedirs(target_dir, exist_ok=True)
            os.replace(path, os.path.join(target_dir, os.path.basename(path)))
            moved.append(rel)
    if moved:
        log.debug("Moving possibly broken audio files to bkp:")
        for rel in moved:
            log.debug(rel)
        log.info(f"Moved {len(moved)} near-silent or unreadable file(s) to bkp folders")
    return moved
