"""Helpers: atomic writes, logging, runtime, seeding, config files, class maps.

Whole capabilities that once lived here moved to their rooms; their old names stay
importable (the original's ``utils.metrics`` among them)."""

from utils import compat

compat.declare("utils", {"metrics": "evaluation.original_metrics", "calibration": "evaluation.calibration",
                         "imbalance": "models.losses"})
