"""ANIMAL-SPOT with pluggable backbones: the package ``animal_spot`` (``pip install .``; from a
checkout, ``python ANIMAL-SPOT/<command>.py`` runs a command of it). Its modules import
their neighbours relative to the package; the original's module names (``utils.metrics``,
``data.audiodataset``, ``trainer``, ...) still work where ``ANIMAL-SPOT/`` is on ``sys.path``
(``as_package``). ``animal_spot.commands`` is the ``animal-spot`` command."""

from . import as_package

__version__ = "2026.12.0"
as_package.install()
