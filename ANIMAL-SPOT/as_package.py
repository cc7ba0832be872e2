"""``ANIMAL-SPOT/`` is one package, ``animal_spot`` (``pip install .`` installs it under that
name; inside, every module imports its neighbours relative to the package). This module
keeps the ways it was always used working from a checkout:

* ``python ANIMAL-SPOT/main.py`` (and the launchers in ``TRAINING/``, ``PREDICTION/``,
  ``EVALUATION/``): ``register()`` makes this folder the package ``animal_spot`` where no
  copy of it is imported yet, and a command run as a script is a module of it
  (``adopt_script``).
* The original's module names: with this folder on ``sys.path`` (the original's way,
  ``sys.path.insert(0, "ANIMAL-SPOT")``), ``import utils.metrics``, ``from
  data.audiodataset import Dataset``, ``import trainer``, ``import main`` give the
  package's own modules (the same objects as ``animal_spot.utils.metrics`` ...; moved
  modules under their old names: ``trainer`` is ``animal_spot.training.trainer``). Without
  this folder on ``sys.path`` these names are left alone, so a user's own ``utils.py`` is
  never shadowed by an installed copy (nor by this folder where it comes later on
  ``sys.path``: the first entry that holds a name wins, as always).
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "animal_spot"
ROOMS = ("data", "utils", "models", "evaluation", "prediction", "embedding", "reviews", "training")
COMMANDS = ("main", "predict", "embed", "review", "export", "demo", "score", "clips", "commands")
MOVED = {"trainer": "training.trainer", "listeners": "training.listeners", "training_data": "training.data",
         "training_options": "training.options", "training_results": "training.results",
         "crossval": "training.crossval", "factories": "training.factories"}


def register() -> str:
    """The package ``animal_spot``: the one already imported, else this folder."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(HERE, "__init__.py"),
                                                      submodule_search_locations=[HERE])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[PACKAGE]
            raise
    return PACKAGE


def adopt_script(namespace: dict) -> str:
    """A command's module run as a script (``__main__``) or imported by its old name: a
    module of the package all the same; returns its ``__package__``."""
    register()
    if namespace["__name__"] not in ("__main__", "__mp_main__"):     # ``import main`` with this folder on sys.path
        # (the script's folder stays on sys.path: a spawned loader worker re-runs the script and finds it there)
        stem = os.path.splitext(os.path.basename(namespace["__file__"]))[0]
        namespace["__spec__"] = importlib.util.spec_from_file_location(f"{PACKAGE}.{stem}", namespace["__file__"])
    return PACKAGE


def adopt(name: str) -> None:
    """A room or module imported by its old top-level name (``utils``, ``trainer``): the
    package's own module takes its place (the import statement returns that one)."""
    register()
    sys.modules[name] = importlib.import_module(f"{PACKAGE}.{MOVED.get(name, name)}")


def provides(name: str) -> bool:
    """Whether ``import name`` would reach this folder: it is on ``sys.path`` and no entry
    before it holds a module of that name (a user's own ``utils.py`` comes first)."""
    for entry in list(sys.path):
        folder = os.path.realpath(entry or os.getcwd())
        if folder == HERE:
            return True
        if os.path.isfile(os.path.join(folder, name + ".py")) or \
                os.path.isfile(os.path.join(folder, name, "__init__.py")):
            return False
    return False


class OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``utils.metrics`` -> ``animal_spot.utils.metrics`` (see the module's notes)."""

    names = set(ROOMS) | set(COMMANDS) | set(MOVED)
    animal_spot_old_names = True                          # one finder, whichever copy of this module installs it

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top not in self.names:
            return None
        if "." in fullname:                               # below an old name that was aliased
            parent = sys.modules.get(top)
            if parent is None or not getattr(parent, "__name__", "").startswith(PACKAGE + "."):
                return None
        elif not provides(top):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        top, _, rest = spec.name.partition(".")
        module = importlib.import_module(f"{PACKAGE}.{MOVED.get(top, top)}" + (f".{rest}" if rest else ""))
        self.real = getattr(self, "real", {})
        self.real[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.real[module.__name__]      # the module keeps its own spec


def install() -> None:
    if not any(getattr(finder, "animal_spot_old_names", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, OldNames())
