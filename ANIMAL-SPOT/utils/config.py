"""The launchers' ``key=value`` config files (TRAINING/, PREDICTION/, EVALUATION/).

Rules of the original, with its traps fixed (see CHANGES.md): blank and ``#`` lines are
skipped (also when indented or CRLF); the value is everything after the first ``=``; an
inline comment (`` # ...``) and surrounding quotes are removed, so every value really
reaches the run; ``true`` (any case) makes a bare flag, ``false`` drops the key; a later
duplicate overrides the value. A line without ``=`` is an error naming file and line.
"""

import logging
import os
import re
import shlex
import subprocess
import sys
from collections import OrderedDict
from typing import List, Optional

LOGGER_NAME = "training animal-spot"
INLINE_COMMENT = re.compile(r"\s+#.*$")
PLACEHOLDER = re.compile(r"/\*[^*]*\*/")          # the templates' /*USER-SPECIFIC-DIRECTORY*/
# placeholders the original's templates may keep: src_dir (the framework beside the launcher), noise_dir (a
# warning, then training without noise files, as the original); every other one would be written to or read
KEPT_PLACEHOLDERS = ("src_dir", "noise_dir")


class ConfigError(ValueError):
    pass


def launcher_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


def parse_value(raw: str) -> Optional[str]:
    """The value as passed on: '' for a bare flag, None to drop the key."""
    value = INLINE_COMMENT.sub("", raw).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if value.lower() == "true":
        return ""
    if value.lower() == "false":
        return None
    return value


def read_config(path: str) -> "OrderedDict[str, str]":
    """``key -> value`` in order of first appearance (dropped keys removed)."""
    config: "OrderedDict[str, Optional[str]]" = OrderedDict()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if "=" not in text:
                raise ConfigError(f"{path}:{number}: expected key=value, got {text!r}")
            key, raw = text.split("=", 1)
            key = key.strip()
            if not key:
                raise ConfigError(f"{path}:{number}: empty key in {text!r}")
            config[key] = parse_value(raw)
    return OrderedDict((k, v) for k, v in config.items() if v is not None)


def config_path_from_argv(argv: List[str]) -> str:
    if len(argv) != 1:
        raise ConfigError("Invalid Number of Cmd Parameter. Only one argument -> path of config file")
    return argv[0]


def source_dir(config: dict, launcher_file: str) -> str:
    """``src_dir`` from the config when it holds the framework, else the ANIMAL-SPOT folder
    beside the launcher's folder."""
    given = config.get("src_dir")
    if given and os.path.isdir(given):
        return given
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(launcher_file))), "ANIMAL-SPOT")


def build_command(config: dict, script: str, launcher_file: str) -> List[str]:
    """``python -W ignore::UserWarning <src_dir>/<script> --key value ...`` as a list."""
    command = [sys.executable, "-W", "ignore::UserWarning", os.path.join(source_dir(config, launcher_file), script)]
    for key, value in config.items():
        if key == "src_dir":
            continue
        command.append(f"--{key}")
        if value != "":
            command.append(value)
    return command


def launch(argv: List[str], script: str, launcher_file: str, what: str) -> int:
    """Read the config named in ``argv``, log it and the command, run it, return its status."""
    log = launcher_logger()
    try:
        config = read_config(config_path_from_argv(argv))
    except (ConfigError, OSError) as error:
        log.error(str(error))
        return 2
    unedited = [key for key, value in config.items() if key not in KEPT_PLACEHOLDERS and PLACEHOLDER.search(value)]
    if unedited:                    # before anything is written (a folder named so at the root, say)
        log.error(f"{argv[0]}: replace the placeholders of {', '.join(unedited)} with your folders and files first "
                  "(or set a key to false to leave it out)")
        return 2
    log.info(f"Config Data: {dict(config)}")
    command = build_command(config, script, launcher_file)
    log.info(f"{what} Command: {shlex.join(command)}")
    log.info(f"Start {what}!!!")
    return subprocess.call(command)
