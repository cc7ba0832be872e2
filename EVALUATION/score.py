"""``python EVALUATION/score.py ...``: event-level scores of predictions against annotated
recordings (``ANIMAL-SPOT/score.py``, also ``animal-spot score``; its ``--help`` lists the
options). This launcher keeps the original place of the command."""

import importlib.util
import os
import sys

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ANIMAL-SPOT")
sys.path.insert(0, SOURCE)
_spec = importlib.util.spec_from_file_location("animal_spot_score", os.path.join(SOURCE, "score.py"))
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
build_parser, main, run = _module.build_parser, _module.main, _module.run

if __name__ == "__main__":
    sys.exit(main())
