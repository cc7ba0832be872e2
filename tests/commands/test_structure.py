"""One real package: every module imports its neighbours relative to the package (never by a
top-level name that only works through ``sys.path``), rooms import only the rooms on the
floors below them, and the original's module names still reach the package's modules."""

import ast
import os
import subprocess
import sys

from conftest import SRC

# which room may import which (the commands at the top level may import every room)
FLOORS = {
    "utils": set(),
    "evaluation": {"utils"},
    "models": {"utils"},
    "data": {"utils", "evaluation"},
    "prediction": {"utils", "evaluation", "models", "data"},
    "training": {"utils", "evaluation", "models", "data"},
    "embedding": {"utils", "evaluation", "models", "data", "prediction"},
    "reviews": {"utils", "evaluation", "data", "prediction"},
}
TOP_NAMES = set(FLOORS) | {"main", "predict", "embed", "review", "export", "demo", "score", "clips", "commands",
                           "trainer", "listeners", "training_data", "training_options", "training_results",
                           "crossval", "factories"}


def modules():
    for folder, dirs, files in os.walk(SRC):
        dirs[:] = [d for d in dirs if d not in ("static", "templates", "__pycache__")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, SRC), ast.parse(open(path, encoding="utf-8").read())


def imported_rooms(relative: str, tree) -> set:
    """The rooms a module reaches with its relative imports."""
    package = relative[:-3].split(os.sep)[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:
                found |= {alias.name for alias in node.names if alias.name in FLOORS}
    return found


def test_no_module_imports_a_neighbour_by_a_top_level_name():
    offenders = []
    for relative, tree in modules():
        if relative in ("as_package.py",):
            continue
        for node in ast.walk(tree):
            names = [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{relative}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in TOP_NAMES and not (name == "as_package")]
    assert offenders == []


def test_rooms_import_only_the_floors_below_them():
    broken = []
    for relative, tree in modules():
        room = relative.split(os.sep)[0] if os.sep in relative else None
        if room is None:
            continue                                    # the commands: every room
        allowed = FLOORS[room] | {room}
        broken += [f"{relative} imports {other}" for other in imported_rooms(relative, tree) - allowed]
    assert broken == []
    rooms_seen = {relative.split(os.sep)[0] for relative, _ in modules() if os.sep in relative}
    assert rooms_seen <= set(FLOORS), rooms_seen - set(FLOORS)             # a new room gets its floor here


def test_the_original_names_reach_the_package_and_leave_a_users_own_names_alone(tmp_path):
    original = f"""
import sys
sys.path.insert(0, {SRC!r})                          # the original's way
from utils.metrics import PerClassAccuracy
from data.audiodataset import Dataset
from models.convnext_encoder import ConvNextEncoder
from trainer import Trainer
import animal_spot.evaluation.original_metrics as metrics
assert PerClassAccuracy is metrics.PerClassAccuracy and Trainer.__module__ == "animal_spot.training.trainer"
assert Dataset.__module__ == "animal_spot.data.audiodataset" and ConvNextEncoder.__module__.startswith("animal_spot.")
print("ok")
"""
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-c", original], cwd=tmp_path / "empty", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "utils.py").write_text("MINE = True\n")     # a user's own utils.py beside the package
    installed = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("animal_spot", {os.path.join(SRC, "__init__.py")!r},
                                              submodule_search_locations=[{SRC!r}])
module = importlib.util.module_from_spec(spec)
sys.modules["animal_spot"] = module
spec.loader.exec_module(module)                      # the package imported as an installed one is
import animal_spot.predict
import utils
assert utils.MINE
sys.modules.pop("utils")
sys.path.append({SRC!r})                             # the package's folder too, but after the user's
import utils
assert utils.MINE                                    # the first entry that holds a name wins
import trainer
import animal_spot.training.trainer as real
assert trainer is real                               # the original's name is the module itself
print("mine")
"""
    result = subprocess.run([sys.executable, "-c", installed], cwd=tmp_path / "mine", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "mine", result.stderr[-2000:]
