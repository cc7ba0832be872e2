"""Every file the project writes goes through here: to a temporary name beside the
target, then renamed over it, so a reader never sees half a file and a failed write
(full disk, killed process) leaves the previous version intact."""

import contextlib
import os
import threading
from typing import IO, Iterator, Optional


class OutputError(OSError):
    """A file could not be written; the message names it."""


def make_folder(path: str, flag: str = "--output_dir") -> str:
    """``path`` made (with its parents) where missing; else one ``OutputError`` naming it."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{flag} {path}: cannot create it ({error.strerror or error})") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path}: not writable")
    return path


def _temporary_name(path: str) -> str:
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", durable: bool = True, temporary: Optional[str] = None,
                 **open_kwargs) -> Iterator[IO]:
    """``with atomic_write(path, "wb") as handle: ...`` writes ``path`` all or nothing.
    Any error while writing removes the temporary file and raises ``OutputError``
    naming ``path``. ``durable`` flushes the data to disk before the rename (skip it
    only for files that are cheap to recompute, such as cache entries). ``temporary``:
    a fixed temporary name (one writer per file, whose rerun overwrites what a killed
    run left there), instead of one unique to the process and thread."""
    if "w" not in mode:
        raise ValueError("atomic_write only writes whole files (mode 'w' or 'wb')")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create its folder ({error.strerror or error})") from None
    tmp = temporary or _temporary_name(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
        if isinstance(error, OutputError):
            raise
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_torch_save(obj, path: str, durable: bool = True) -> None:
    import torch

    with atomic_write(path, "wb", durable=durable) as handle:
        torch.save(obj, handle)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
