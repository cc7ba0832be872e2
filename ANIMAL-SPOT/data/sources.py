"""Where recordings come from: local files and folders, lists of them, and URLs of any
filesystem fsspec knows (``data.remote``).

``recording_list`` expands ``--input_file``: a folder or a URL prefix is searched
recursively for .wav and .flac files, a ``.txt`` / ``.lst`` file lists one recording (or
folder, or prefix) per line, anything else is one recording. Streaming formats soundfile
cannot read (HLS, AAC) are out of scope.
"""

import os
from typing import List

from .audio_io import RECORDING_EXTENSIONS, has_extension, recording_files
from .remote import configure, filesystem, is_remote, url_of  # noqa: F401  (configure: predict.py's)

LIST_EXTENSIONS = (".txt", ".lst")


def recording_list(input_file: str) -> List[str]:
    """Every recording ``--input_file`` names (sorted within a folder or prefix)."""
    if is_remote(input_file):
        if has_extension(input_file, RECORDING_EXTENSIONS):      # a recording: no listing (over HTTP that is a GET)
            return [input_file]
        fs, path = filesystem(input_file)
        try:
            if fs.isdir(path):
                found = fs.find(path)
                return sorted(url_of(fs, p) for p in found if has_extension(p, RECORDING_EXTENSIONS))
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


def file_stem(path: str) -> str:
    """Output name of a recording: its base name without the extension."""
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0].strip()


def output_name(relative: str) -> str:
    """A recording's output name from its path below the run's input: folder and file stem."""
    return os.path.join(os.path.dirname(relative), file_stem(relative))


def relative_name(input_file: str, path: str) -> str:
    """A recording's path below ``--input_file`` (its own name for a single file or a list)."""
    if is_remote(path) or is_remote(input_file):
        if is_remote(input_file) and path.startswith(input_file.rstrip("/") + "/"):
            return path[len(input_file.rstrip("/")) + 1:]
        return path.rstrip("/").rsplit("/", 1)[-1]
    if os.path.isdir(input_file):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(input_file))
    return os.path.basename(path)


