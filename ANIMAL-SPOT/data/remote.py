"""Remote recordings: any filesystem fsspec knows (``s3://``, ``gs://``, ``https://``,
``file://``, ``memory://``), opened for soundfile to read block by block.

Where the server answers ranged reads, fsspec fetches only the blocks asked for; a
server without them (``python -m http.server``) is read once, sequentially and block by
block, into a temporary file removed when the recording is closed. Cloud filesystems
(s3fs, gcsfs, ...) are optional packages; a missing one is named in the error.
"""

import os
import shutil
import tempfile
from typing import Dict, Optional, Tuple

import fsspec

BLOCK = 1 << 20
_OPTIONS: Dict = {}


class RemoteError(OSError):
    """A remote recording cannot be opened; the message names it."""


def is_remote(path: str) -> bool:
    return "://" in path


def configure(storage_options: Optional[Dict]) -> None:
    """Options for every remote filesystem of this process (``--storage_options``)."""
    _OPTIONS.clear()
    _OPTIONS.update(storage_options or {})


def filesystem(url: str):
    try:
        return fsspec.core.url_to_fs(url, **_OPTIONS)
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(
            protocol, "the fsspec filesystem package for this protocol")
        raise ValueError(f"{url}: reading {protocol}:// needs {package} (pip install {package}); {error}") from None
    except ValueError as error:
        raise ValueError(f"{url}: {error}") from None


def url_of(fs, path: str) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (list, tuple)) else fs.protocol
    return path if "://" in path else f"{protocol}://{path.lstrip('/') if protocol != 'file' else path}"


class Remote:
    """An open remote recording: ``handle`` for soundfile, ``close()`` when done."""

    def __init__(self, url: str):
        self.url, self.handle, self.temporary = url, None, None
        fs, path = filesystem(url)
        try:
            handle = fs.open(path, "rb", block_size=BLOCK)
            if not self._ranged(handle):
                handle.close()
                handle = self._downloaded(fs, path)
        except (OSError, ValueError) as error:
            self.close()
            raise RemoteError(f"{url}: cannot open it ({error.__class__.__name__}: {error})") from None
        except Exception as error:             # aiohttp and cloud clients raise their own types
            self.close()
            raise RemoteError(f"{url}: cannot open it ({error.__class__.__name__}: {error})") from None
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
