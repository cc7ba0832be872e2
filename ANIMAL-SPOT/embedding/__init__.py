"""Embeddings of a season: the store (``store``), search by example (``search``), few-shot
heads (``heads``), and the review page's "more like this" and active learning
(``review_link``, ``active``)."""

if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
