"""The training library: the data of a run (``data``: folder -> split -> loaders), its
options (``options``) and results (``results``: model file, metrics.json, run.json), the
one pass function for every phase (``trainer``) with its concerns as listeners
(``listeners``), optimiser and scheduler (``factories``), cross-validation by tape
(``crossval``). ``main.py`` is its command."""

if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
