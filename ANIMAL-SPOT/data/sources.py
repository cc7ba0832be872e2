"""Where recordings come from: local files and folders, lists of them, and URLs of any
filesystem fsspec knows (``s3://``, ``gs://``, ``https://``, ``file://``, ``memory://``).

``recording_list`` expands ``--input_file``: a folder or a URL prefix is searched
recursively for .wav and .flac files, a ``.txt`` / ``.lst`` file lists one recording (or
folder, or prefix) per line, anything else is one recording. ``open_recording`` gives a
file object soundfile reads block by block: where the server answers ranged reads,
fsspec fetches only the blocks asked for; a server without them (``python -m
http.server``) is read sequentially, block by block, into a temporary file (removed when
the recording is closed). Cloud filesystems (s3fs, gcsfs, ...) are optional packages; a
missing one is named in the error. Streaming formats soundfile cannot read (HLS, AAC)
are out of scope.
"""

import os
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

from data.audio_io import RECORDING_EXTENSIONS, AudioFileError, has_extension, recording_files

LIST_EXTENSIONS = (".txt", ".lst")
BLOCK = 1 << 20
_OPTIONS: Dict = {}


def configure(storage_options: Optional[Dict]) -> None:
    """Options for every remote filesystem of this process (``--storage_options``)."""
    _OPTIONS.clear()
    _OPTIONS.update(storage_options or {})


def is_remote(path: str) -> bool:
    return "://" in path


def _filesystem(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **_OPTIONS)
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(
            protocol, "the fsspec filesystem package for this protocol")
        raise ValueError(f"{url}: reading {protocol}:// needs {package} (pip install {package}); {error}") from None
    except ValueError as error:
        raise ValueError(f"{url}: {error}") from None


def _url(fs, path: str) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (list, tuple)) else fs.protocol
    return path if "://" in path else f"{protocol}://{path.lstrip('/') if protocol != 'file' else path}"


def recording_list(input_file: str) -> List[str]:
    """Every recording ``--input_file`` names (sorted within a folder or prefix)."""
    if is_remote(input_file):
        if has_extension(input_file, RECORDING_EXTENSIONS):      # a recording: no listing (over HTTP that is a GET)
            return [input_file]
        fs, path = _filesystem(input_file)
        try:
            if fs.isdir(path):
                found = fs.find(path)
                return sorted(_url(fs, p) for p in found if has_extension(p, RECORDING_EXTENSIONS))
        except OSError as error:
            raise ValueError(f"--input_file {input_file}: cannot list it ({error})") from None
        return [input_file]
    if os.path.isfile(input_file) and input_file.lower().endswith(LIST_EXTENSIONS):
        folder = os.path.dirname(os.path.abspath(input_file))
        out: List[str] = []
        with open(input_file, encoding="utf-8") as handle:
            for line in handle:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                if not is_remote(entry) and not os.path.isabs(entry):
                    entry = os.path.join(folder, entry)
                if is_remote(entry) or os.path.isdir(entry):
                    out += recording_list(entry)
                else:
                    out.append(entry)          # a missing entry fails on its own, with its name
        return out
    return recording_files(input_file)


def relative_name(input_file: str, path: str) -> str:
    """A recording's path below ``--input_file`` (its own name for a single file or a list)."""
    if is_remote(path) or is_remote(input_file):
        if is_remote(input_file) and path.startswith(input_file.rstrip("/") + "/"):
            return path[len(input_file.rstrip("/")) + 1:]
        return path.rstrip("/").rsplit("/", 1)[-1]
    if os.path.isdir(input_file):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(input_file))
    return os.path.basename(path)


class Remote:
    """An open remote recording: ``handle`` for soundfile, ``close()`` when done."""

    def __init__(self, url: str):
        self.url, self.handle, self.temporary = url, None, None
        fs, path = _filesystem(url)
        try:
            handle = fs.open(path, "rb", block_size=BLOCK)
            if not self._ranged(handle):
                handle.close()
                handle = self._downloaded(fs, path)
        except (OSError, ValueError) as error:
            self.close()
            raise AudioFileError(f"{url}: cannot open it ({error.__class__.__name__}: {error})") from None
        except Exception as error:             # aiohttp and cloud clients raise their own types
            self.close()
            raise AudioFileError(f"{url}: cannot open it ({error.__class__.__name__}: {error})") from None
        self.handle = handle

    @staticmethod
    def _ranged(handle) -> bool:
        """Whether the server answers a read from the middle (a ranged read)."""
        try:
            size = getattr(handle, "size", None)
            handle.seek(min(1024, max(0, (size or 2) - 1)))
            handle.read(1)
            handle.seek(0)
            return True
        except ValueError:                      # fsspec: the server does not support range requests
            return False

    def _downloaded(self, fs, path: str):
        """The file read once from start to end, block by block, into a temporary file."""
        self.temporary = tempfile.mkdtemp(prefix="animal-spot-")
        local = os.path.join(self.temporary, "recording" + os.path.splitext(path)[1])
        with fs.open(path, "rb", block_size=0) as stream, open(local, "wb") as out:
            while True:
                block = stream.read(BLOCK)
                if not block:
                    break
                out.write(block)
        return open(local, "rb")

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except Exception:
                pass
            self.handle = None
        if self.temporary:
            shutil.rmtree(self.temporary, ignore_errors=True)
            self.temporary = None


def open_recording(path: str) -> Tuple[object, Optional[Remote]]:
    """``(what soundfile opens, the remote to close or None)``."""
    if not is_remote(path):
        return path, None
    remote = Remote(path)
    return remote.handle, remote
