"""The review room: a prediction folder's detections reviewed by a person, and what
follows from the answers. ``units`` (what a folder offers), ``sampling`` (strata, order),
``journal`` (the only state; what an answer means), ``estimators`` and ``summary``
(figures with intervals), ``tables`` (reviewed Raven tables), ``session`` (the state of a
review), ``media`` (spectrograms and audio), ``app`` (the web page and its interface)."""

if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
