"""``pip install .`` (not editable) gives the whole tool: the files pyproject.toml installs are
every module and page file of ANIMAL-SPOT/, and a copy of just those runs every command
(the demo's clips among them) from a folder that is not the checkout."""

import os
import shutil
import subprocess
import sys
import warnings

from conftest import ROOT, SRC


def installed_files():
    """The package's files as setuptools' configuration of pyproject.toml selects them."""
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # setuptools calls its [tool.setuptools] support beta
        tool = read_configuration(os.path.join(ROOT, "pyproject.toml"))["tool"]["setuptools"]
    root = tool["package-dir"]["animal_spot"]
    files = set()
    for package in tool["packages"]:
        folder = os.path.join(ROOT, root, *package.split(".")[1:])
        files |= {os.path.relpath(os.path.join(folder, n), os.path.join(ROOT, root)) for n in os.listdir(folder)
                  if n.endswith(".py")}
        for pattern in tool.get("package-data", {}).get(package, []):
            sub, _, suffix = pattern.partition("/")
            files |= {os.path.join(os.path.relpath(folder, os.path.join(ROOT, root)), sub, n).lstrip("./")
                      for n in os.listdir(os.path.join(folder, sub))}
    return {os.path.normpath(f) for f in files}


def test_a_plain_install_holds_every_module_and_runs_every_command(tmp_path):
    wanted = {os.path.normpath(os.path.relpath(os.path.join(d, n), SRC)) for d, dirs, names in os.walk(SRC)
              for n in names if not n.endswith(".pyc") and "__pycache__" not in d}
    files = installed_files()
    assert wanted - files == set()                                   # nothing left behind in the checkout
    site = tmp_path / "site"
    for relative in files:
        target = site / "animal_spot" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(SRC, relative), target)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    check = """
import contextlib, io, sys
import animal_spot
from animal_spot import commands
assert animal_spot.__file__.startswith(sys.argv[1]), animal_spot.__file__      # the copy, not the checkout
for argv in (["--version"], ["clips", "--help"], ["demo", "--help"], ["train", "--help"], ["review", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            status = commands.main(argv)
        except SystemExit as stop:            # --help
            status = stop.code
    assert status == 0, argv
import animal_spot.data.clips, animal_spot.training.trainer
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", check, str(site)], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
