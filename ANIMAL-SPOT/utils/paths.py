"""Paths that must stay inside a folder: every output below ``--output_dir``, every file a
server hands out below the folders it serves. A name from outside (a remote recording's
key, a URL path, a table's cell) may hold ``..`` or lead through a link; it is resolved
before it is used, and refused where it leaves its folder."""

import hashlib
import os
from typing import Callable, List


class OutsideError(ValueError):
    """A path that would lead outside its folder; the message names both."""


def below(root: str, *parts: str) -> str:
    """``root/parts...`` (normalised, as given), or ``OutsideError`` where it resolves
    (``..``, an absolute part, a symbolic link) to a place outside ``root``."""
    path = os.path.normpath(os.path.join(root, *parts))
    base = os.path.realpath(root)
    resolved = os.path.realpath(path)
    if os.path.commonpath([base, resolved]) != base:
        raise OutsideError(f"{os.path.join(*parts) if parts else path}: leads outside {root}")
    return path


def plain(relative: str) -> bool:
    """Whether ``relative`` is made of plain names: no ``..``, ``.``, empty or absolute
    parts, no backslash (checked on the text; links are not resolved)."""
    if not relative or relative.startswith(("/", "\\")) or os.path.isabs(relative) or "\\" in relative:
        return False
    return not any(part in ("", ".", "..") for part in relative.split("/"))


def served_file(root: str, relative: str):
    """``root/relative`` when it is a file inside ``root`` reached by plain names (see
    ``plain``); else None."""
    if not plain(relative):
        return None
    try:
        path = below(root, *relative.split("/"))
    except OutsideError:
        return None
    return os.path.realpath(path) if os.path.isfile(path) else None


def files_below(path: str, accept: Callable[[str], bool]) -> List[str]:
    """A single file, or every file below a folder whose name ``accept`` takes
    (recursive, sorted, hidden entries skipped)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(files) if not n.startswith(".") and accept(n)]
    return sorted(found)


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (read in blocks): what a store or a head records of the
    model or weights it was made with."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
