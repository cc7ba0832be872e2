"""Review a season's detections in the browser: ``python ANIMAL-SPOT/review.py
--predictions DIR --recordings DIR --out REVIEW_DIR``.

A local web page (127.0.0.1 unless ``--host`` says otherwise) shows a stratified random
sample of the detections of every class (and of the windows below the threshold), one at
a time: a spectrogram of the selection with context, its audio (time-expanded for calls
above human hearing), the model's label, score and alternatives. The answers go to
``REVIEW_DIR/review_journal.jsonl`` before the page moves on; the review's Raven tables
(``tables/``, with ``Verified`` and ``Reviewed label``) and ``review_summary.json``
(precision, recall and call density per class with 95 % intervals, the precision curve,
the threshold for a target precision) follow from them.

This file is the command; the review room is ``reviews/``: units (what a prediction
folder offers), sampling, journal (what an answer means), estimators and summary, tables,
session, media, and the web app.
"""

import argparse
import logging
import os
import sys
import threading
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from werkzeug.serving import make_server

from .data.audio_io import AudioFileError
from .data.features import FeatureOptions
from .data.snippets import expansion_for
from .embedding.active import ActiveLearner, more_like_this
from .embedding.store import Store, StoreError
from .models.model_file import ModelFileError, load_model
from .reviews.app import Review, create_app
from .reviews.media import Media
from .reviews.session import JOURNAL, ReviewSession
from .reviews.units import ReviewError, load_units
from .utils import cli
from .utils.atomic import make_folder

log = logging.getLogger("REVIEW")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Review detections in the browser: verified calls, honest precision "
                                            "and recall, call density, clips for the next training run.")
    p.add_argument("--predictions", required=True, help="a predict.py output folder (logs and/or Raven tables)")
    p.add_argument("--recordings", required=True, help="the recordings, matched by path relative to this folder")
    p.add_argument("--out", required=True, help="the review's folder (journal, tables, summary)")
    p.add_argument("--model_path", default=None, help="the model: its spectrogram settings and classes")
    p.add_argument("--per_class", type=int, default=30, help="reviews planned per class (default 30)")
    p.add_argument("--bins", type=int, default=4,
                   help="score strata per class, of the detections and of the windows below the threshold (default 4)")
    p.add_argument("--target_precision", type=float, default=None,
                   help="also estimate the lowest threshold reaching this precision")
    p.add_argument("--seed", type=int, default=0, help="the sample's random order (default 0)")
    p.add_argument("--context", type=float, default=1.0, help="seconds shown before and after a selection")
    p.add_argument("--time_expansion", type=int, default=None,
                   help="play audio this many times slower (default: 1, or enough to bring the model's fmax "
                        "below 16 kHz)")
    p.add_argument("--store", default=None, help="an embedding store of these recordings (embed.py): 'more like "
                                                 "this' and active learning")
    p.add_argument("--active", action="store_true", help="active learning (needs --store): after each batch of "
                                                         "answers a head is refit and uncertain items are queued")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    return p


def open_review(args) -> Review:
    options, classes, freq = None, [], ("", "")
    if args.model_path:
        spec = load_model(args.model_path).spec
        options = FeatureOptions.from_data_opts(spec.data_opts, spec.min_max_norm)
        classes, freq = spec.class_map.names, (options.fmin, options.fmax)
    loaded = load_units(args.predictions, args.recordings)
    classes = classes or sorted({u.cls for u in loaded.units} - {"unknown"})
    session = ReviewSession(loaded, args.out, args.per_class, args.bins, args.seed, args.target_precision, classes,
                            freq, args.recordings)
    session.write_all_tables()
    expansion = args.time_expansion or (expansion_for(options.fmax) if options else 1)
    review = Review(session, Media(session.units, options, args.context), args.recordings, args.out, expansion,
                    classes)
    if args.store:
        store = Store.existing(args.store)
        review.similar = lambda item, top: more_like_this(session, store, item, top)
        if args.active:
            review.learner = ActiveLearner(session, store)
    elif args.active:
        raise ValueError("--active needs --store (an embedding store of the recordings)")
    return review


def serve(review: Review, host: str, port: int, ready=None):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)          # no line per request
    server = make_server(host, port, create_app(review), threaded=True)
    review.listen(host, server.server_port)
    address = f"http://{host}:{server.server_port}/"
    print(f"Review page: {address}  ({len(review.session.units)} units, answers in "
          f"{os.path.join(review.out, JOURNAL)}; Ctrl-C stops)", flush=True)
    if review.hosts is None:
        log.warning(f"listening on every interface ({host}): any host name is answered")
    if ready is not None:
        ready(server, address)
    server.serve_forever()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_log):
        if args.per_class < 1 or args.bins < 1:
            raise ValueError("--per_class and --bins must be at least 1")
        make_folder(args.out, "--out")
        review = open_review(args)
        try:
            serve(review, args.host, args.port)
        except KeyboardInterrupt:                     # Ctrl-C is how a review ends
            return 0
    return cli.run(body, "REVIEW", errors=(ReviewError, StoreError, ModelFileError, AudioFileError, ValueError,
                                           OSError))


def serve_in_thread(review: Review, host: str = "127.0.0.1", port: int = 0):
    """``(server, address)`` of a review served by a background thread (the demo, tests)."""
    found, ready = [], threading.Event()
    threading.Thread(target=serve, args=(review, host, port, lambda s, a: (found.append((s, a)), ready.set())),
                     daemon=True).start()
    ready.wait(60)
    return found[0]


if __name__ == "__main__":
    sys.exit(main())
