"""Evaluation: how good a model is, by every measure the project reports.

``metrics`` (the one named collection of figures, per pass), ``intervals`` (confidence
intervals), ``calibration`` (temperature, thresholds, the "unknown" score), ``raven``
(selection tables read and written), ``events`` (event-level scores against annotations)
and ``log_format`` (the prediction log, written and read). Plain functions on arrays
where possible; the training log and ``EVALUATION/`` are thin layers over them. The
estimators of a stratified review live in the review room (``reviews.estimators``)."""

if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
