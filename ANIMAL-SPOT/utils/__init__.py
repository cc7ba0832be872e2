"""Helpers: atomic writes, logging, runtime, seeding, config files, class maps.

Whole capabilities that once lived here moved to their rooms; their old names stay
importable (the original's ``utils.metrics`` among them)."""

if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
else:
    from . import compat
    compat.declare(__name__, {"metrics": "evaluation.original_metrics", "calibration": "evaluation.calibration",
                             "imbalance": "models.losses"})
