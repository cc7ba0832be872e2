"""Train from a config file: ``python TRAINING/start_training.py TRAINING/config``."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ANIMAL-SPOT"))

from utils.config import launch  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:], "main.py", __file__, "Training"))
