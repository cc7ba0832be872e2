"""Log lines as the original writes them: ``HH:MM:SS|<L>|message`` (L = level initial)."""

import contextlib
import logging
import os
import sys
from typing import Iterator, Optional

from .atomic import OutputError

FORMAT = logging.Formatter("%(asctime)s|%(levelname).1s|%(message)s", datefmt="%H:%M:%S")


def setup_logger(name: str = "ANIMAL-SPOT", log_dir: Optional[str] = None, file_name: str = "TRAIN.log",
                 debug: bool = False, console: bool = True, level: Optional[int] = None) -> logging.Logger:
    """A logger writing to stderr and, with ``log_dir``, to ``<log_dir>/<file_name>``
    (truncated; streamed, so ``tail -f`` follows it). Calling it again replaces the
    handlers, so each run gets its own file. ``level`` overrides the debug choice (the
    other processes of a torchrun job only report warnings)."""
    logger = logging.getLogger(name)
    close_logger(logger)
    logger.setLevel(level if level is not None else (logging.DEBUG if debug else logging.INFO))
    logger.propagate = False
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(FORMAT)
        logger.addHandler(stream)
    if log_dir:
        path = os.path.join(log_dir, file_name)
        try:
            os.makedirs(log_dir, exist_ok=True)
            handler = logging.FileHandler(path, mode="w")
        except OSError as error:
            raise OutputError(f"{path}: cannot write the log ({error.strerror or error})") from None
        handler.setFormatter(FORMAT)
        logger.addHandler(handler)
    return logger


def to_file(logger: logging.Logger, level: int, message: str) -> None:
    """``message`` in the logger's files only (a network's module tree: the log keeps it,
    the console is spared it)."""
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, "(file)", 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


@contextlib.contextmanager
def extra_log_file(logger: logging.Logger, log_dir: Optional[str], file_name: str) -> Iterator[None]:
    """While the block runs, ``logger`` also writes to ``<log_dir>/<file_name>`` (one fold
    of a cross-validation has its own log beside the run's)."""
    if not log_dir:
        yield
        return
    os.makedirs(log_dir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(log_dir, file_name), mode="a")
    handler.setFormatter(FORMAT)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
