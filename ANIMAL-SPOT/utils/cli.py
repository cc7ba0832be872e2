"""One skeleton for every command (``main.py``, ``predict.py``, ``embed.py``, ``review.py``,
``export.py``, ``score.py``, and ``animal-spot <command>``).

``run(body, ...)``: the command's logger (on standard error, and in a file of
``log_dir`` where asked), then ``body(log)``; an error the command knows ends it with one
line naming what is wrong and exit status 1, never a traceback; so does the GPU running
out of memory (with what helps); Ctrl-C ends it with 1.

``stored_options(parser, argv)``: ``--config FILE`` repeats a run from its stored
configuration (a JSON object of options by flag name, such as ``run.json`` beside a
trained model or ``metrics.json``'s ``options``): the file's values become the defaults,
and flags given on the command line still win.
"""

import json
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from .atomic import OutputError
from .logging import close_logger, setup_logger


class StoredOptionsError(ValueError):
    """A ``--config`` file that cannot be used; the message names it."""


def error_message(error: BaseException) -> str:
    """The error's own message; for one raised in a data loader worker, without the
    worker's traceback that the loader wraps around it."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return text


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is PyTorch's GPU out-of-memory error (torch imported lazily: a
    command's ``--help`` does not load it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)


def run(body: Callable[[logging.Logger], Optional[int]], logger: str = "ANIMAL-SPOT", log_dir: Optional[str] = None,
        log_file: str = "TRAIN.log", debug: bool = False, errors: Tuple = (), library: bool = False,
        level: Optional[int] = None) -> int:
    """Run ``body(log)`` as a command; its return value (None = 0) is the exit status.
    ``library``: the modules' notes (logger ``ANIMAL-SPOT``) go to the console too."""
    try:
        log = setup_logger(logger, log_dir, log_file, debug, level=level)
    except OutputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    notes = setup_logger("ANIMAL-SPOT", None, debug=debug) if library and logger != "ANIMAL-SPOT" else None
    try:
        return body(log) or 0
    except errors as error:
        log.error(error_message(error))
        return 1
    except KeyboardInterrupt:
        log.warning("Interrupted.")
        return 1
    except Exception as error:
        if not out_of_memory(error):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else "CUDA out of memory"
        log.error(f"the GPU ran out of memory ({first}); a smaller --batch_size needs less, "
                  "or --no_cuda runs on the CPU")
        return 1
    finally:
        close_logger(log)
        if notes is not None:
            close_logger(notes)


def print_text(text: str) -> None:
    """``text`` on standard output; a reader that stops early (``| head``) is no error."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())     # nothing more to say at exit


def stored_options(parser, argv: Optional[Sequence[str]], fresh: Sequence[str] = ()) -> List[str]:
    """``argv`` without ``--config FILE``; the file's options set ``parser``'s defaults,
    except ``fresh`` ones (where a run writes: a repeat writes elsewhere), which
    ``fresh_defaults`` gives where the file set them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
        return argv
    rest, path = [], None
    items = iter(argv)
    for item in items:
        if item == "--config":
            path = next(items, None)
        elif item.startswith("--config="):
            path = item.split("=", 1)[1]
        else:
            rest.append(item)
    if not path:
        raise StoredOptionsError("--config needs a file (run.json of a run, or its metrics.json)")
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
    except (OSError, ValueError) as error:
        raise StoredOptionsError(f"--config {path}: cannot read it as JSON ({error})") from None
    if isinstance(stored, dict) and isinstance(stored.get("options"), dict):
        stored = stored["options"]                        # a metrics.json
    if not isinstance(stored, dict):
        raise StoredOptionsError(f"--config {path}: not a JSON object of options")
    known = {action.dest: action for action in parser._actions if action.option_strings}
    parser.set_defaults(**{key: value for key, value in stored.items() if key in known and key not in fresh})
    parser.stored_fresh = [key for key in fresh if stored.get(key) not in (None, "")]
    return rest
