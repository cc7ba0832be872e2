"""Embeddings of a season: the store (``store``), search by example (``search``), few-shot
heads (``heads``), and the review page's "more like this" and active learning
(``review_link``, ``active``)."""
