"""Evaluation: how good a model is, by every measure the project reports.

``metrics`` (the one named collection of figures, per pass), ``intervals`` (confidence
intervals), ``calibration`` (temperature, thresholds, the "unknown" score), ``raven``
(selection tables read and written), ``events`` (event-level scores against annotations)
and ``review`` (estimators of a stratified review). Plain functions on arrays where
possible; the review page and the training log are thin layers over them."""
