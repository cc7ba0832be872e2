"""Prediction: the window stream (core), decisions and events, result sinks.

Modules that moved to the evaluation room stay importable under their old names."""

if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
else:
    from ..utils import compat
    compat.declare(__name__, {"annotations": "evaluation.raven", "events": "evaluation.events",
                                  "raven": "prediction.decisions", "log_format": "evaluation.log_format"})
