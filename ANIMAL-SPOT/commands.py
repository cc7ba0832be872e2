"""``animal-spot <command> ...``: one command line for the whole project, installed by
``pip install .`` (``pyproject.toml``). Each command is the module a user would run as a
script, with the same flags::

    animal-spot train ...      python ANIMAL-SPOT/main.py ...      (also: --config run.json)
    animal-spot predict ...    python ANIMAL-SPOT/predict.py ...
    animal-spot embed ...      python ANIMAL-SPOT/embed.py ...     (search, fit, classify, report, encoders)
    animal-spot review ...     python ANIMAL-SPOT/review.py ...
    animal-spot export ...     python ANIMAL-SPOT/export.py ...
    animal-spot score ...      python EVALUATION/score.py ...
    animal-spot clips ...      python ANIMAL-SPOT/clips.py ...     (also TRAINING/clips_from_raven.py)
    animal-spot demo ...       python ANIMAL-SPOT/demo.py ...
"""

import importlib
import sys
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/commands.py
    import as_package
    __package__ = as_package.adopt_script(globals())

COMMANDS = {"train": ("main", "train a detector or classifier"),
            "predict": ("predict", "run models over recordings: logs, Raven tables, other formats"),
            "embed": ("embed", "embedding stores: embed, search, fit a head, classify, report, encoders"),
            "review": ("review", "review detections in the browser"),
            "export": ("export", "export a model file to ONNX"),
            "score": ("score", "event-level scores of predictions against annotations"),
            "clips": ("clips", "training clips from class folders, a label table or Raven tables"),
            "demo": ("demo", "the whole workflow on a small synthetic set")}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    return "usage: animal-spot <command> [options]   (animal-spot --version)\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()) + \
        "\n\n'animal-spot <command> --help' lists a command's options."


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"animal-spot {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"animal-spot: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f".{COMMANDS[argv[0]][0]}", __package__)
    sys.argv = [f"animal-spot {argv[0]}"] + argv[1:]
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
