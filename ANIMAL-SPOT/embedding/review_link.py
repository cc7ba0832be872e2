"""The review page's "more like this": search the store with an item's stretch and queue
the best selections (``how: search``) before the rest of the sample."""

import os

from embedding.search import search, stored_stretch
from embedding.store import Store
from evaluation.review_session import Unit, find_recording, unit_id


def more_like_this(review, item: str, top: int = 10) -> int:
    """Queue up to ``top`` selections most like ``item``; returns how many were new."""
    session = review.session
    if item not in session.units:
        raise ValueError(f"unknown item {item!r}")
    query = session.units[item]
    store = Store.existing(review.args.store)
    vector, exclude = stored_stretch(store, query.recording, query.begin, query.end)
    units = []
    for hit in search(store, vector, top, exclude):
        key = os.path.splitext(hit.recording)[0]
        path = find_recording(review.args.recordings, key) or hit.source
        if session.covered(key, hit.begin, hit.end):
            continue
        units.append(Unit(unit_id(key, hit.begin, hit.end, query.cls, False, hit.channel), key, path,
                          round(hit.begin, 3), round(hit.end, 3), query.cls, round(hit.similarity, 4), query.cls,
                          False, hit.channel, [], f"{query.cls}|search", None, "search"))
    return session.queue(units, "search")
