"""Prediction: the window stream (core), decisions and events, result sinks.

Modules that moved to the evaluation room stay importable under their old names."""

from utils import compat

compat.declare("prediction", {"annotations": "evaluation.raven", "events": "evaluation.events",
                              "raven": "prediction.decisions", "log_format": "evaluation.log_format"})
