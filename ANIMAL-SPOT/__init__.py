"""ANIMAL-SPOT with pluggable backbones, installed as the package ``animal_spot``
(``pyproject.toml``). The project's modules import each other by their own names (``main``,
``predict``, ``data.audio_io``, ...), as with ``python ANIMAL-SPOT/main.py``: importing the
package puts its folder on ``sys.path``. ``animal_spot.commands`` is the ``animal-spot``
command."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
