"""Old module names that stay importable after their module moved to another room.

Each package declares its moved modules once, in its ``__init__``::

    compat.declare(__name__, {"metrics": "evaluation.original_metrics"})

and ``import utils.metrics`` then gives the ``evaluation.original_metrics`` module itself (the
same object: classes, functions and ``isinstance`` checks are shared).
"""

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Dict


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self.targets: Dict[str, str] = {}
        self.specs: Dict[str, object] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.targets:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(self.targets[spec.name])
        self.specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        """The target module is already executed; it keeps its own spec (the import
        machinery set the alias's)."""
        module.__spec__ = self.specs[module.__name__]


_FINDER = _Aliases()


def declare(package: str, moved: Dict[str, str]) -> None:
    """``package.<old>`` -> module ``moved[old]`` (named below the root package, as
    ``evaluation.raven`` for ``animal_spot.evaluation.raven``) for every entry."""
    root = package.split(".")[0] + "." if "." in package else ""
    for old, new in moved.items():
        _FINDER.targets[f"{package}.{old}"] = root + new
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
