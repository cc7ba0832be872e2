"""Review a season's detections in the browser: ``python ANIMAL-SPOT/review.py
--predictions DIR --recordings DIR --out REVIEW_DIR``.

A local web page (127.0.0.1 unless ``--host`` says otherwise) shows a stratified random
sample of the detections of every class (and of the windows just below the threshold),
one at a time: a spectrogram of the selection with context, its audio (time-expanded
for calls above human hearing), the model's label, score and alternatives. The answers
go to ``REVIEW_DIR/review_journal.jsonl`` before the page moves on; the review's Raven
tables (``tables/``, with ``Verified`` and ``Reviewed label``) and
``review_summary.json`` (precision, recall and call density per class with 95 %
intervals, the threshold for a target precision) follow from them. The estimators live
in ``evaluation.review``; this file is the page and its HTTP interface:

    GET  /api/next[?class=C]      the next item, or {"item": null} when the sample is done
    POST /api/decision            {"item", "decision": correct|wrong|other|unsure|skip, "label", "comment"}
    POST /api/undo                take back the newest answer
    GET  /api/summary             the summary (also written to review_summary.json)

Nothing is served but the page's own files and files below ``--recordings`` and ``--out``.
"""

import argparse
import html
import logging
import os
import sys
import threading
from collections import OrderedDict
from typing import List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "review_assets")
log = logging.getLogger("REVIEW")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Review detections in the browser: verified calls, honest precision "
                                            "and recall, call density, clips for the next training run.")
    p.add_argument("--predictions", required=True, help="a predict.py output folder (logs and/or Raven tables)")
    p.add_argument("--recordings", required=True, help="the recordings, matched by path relative to this folder")
    p.add_argument("--out", required=True, help="the review's folder (journal, tables, summary)")
    p.add_argument("--model_path", default=None, help="the model: its spectrogram settings and classes")
    p.add_argument("--per_class", type=int, default=30, help="reviews planned per class (default 30)")
    p.add_argument("--bins", type=int, default=4, help="score strata of the detections per class (default 4)")
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


# ----------------------------------------------------------------------- the app
class Review:
    """The session plus what the page needs to show an item."""

    def __init__(self, args, session, options, expansion: int, classes: List[str]):
        self.args, self.session, self.options, self.expansion, self.classes = args, session, options, expansion, classes
        self.media = OrderedDict()
        self.media_lock = threading.Lock()
        self.learner = None

    def item_json(self, unit) -> dict:
        data = unit.public()
        data["image"] = f"/media/image/{unit.id}.png"
        data["audio"] = f"/media/audio/{unit.id}.wav?expand={self.expansion}"
        data["expansion"] = self.expansion
        data["progress"] = dict(zip(("answered", "planned"), self.session.progress(unit.cls)))
        return data

    def rendered(self, kind: str, item: str, expand: int = 1) -> bytes:
        from data.snippets import read_snippet, spectrogram_png, wav_bytes

        key = (kind, item, expand)
        with self.media_lock:
            if key in self.media:
                self.media.move_to_end(key)
                return self.media[key]
        unit = self.session.units[item]
        context = self.args.context
        samples, rate, offset = read_snippet(unit.path, unit.begin, unit.end, context, unit.channel)
        if kind == "image":
            data = spectrogram_png(samples, rate, self.options, (unit.begin - offset, unit.end - offset))
        else:
            data = wav_bytes(samples, rate, expand)
        with self.media_lock:
            self.media[key] = data
            while len(self.media) > 64:
                self.media.popitem(last=False)
        return data

    def prefetch(self, unit) -> None:
        """Render an item's image and audio in the background (the next page view is fast)."""
        def work():
            try:
                self.rendered("image", unit.id)
                self.rendered("audio", unit.id, self.expansion)
            except Exception:           # shown (with its error) when the page asks for it
                pass
        threading.Thread(target=work, daemon=True).start()


def safe_file(root: str, relative: str) -> Optional[str]:
    """``root/relative`` if it is a file inside ``root`` (no ``..``, no absolute path, no
    link that leads outside); else None."""
    if not relative or relative.startswith(("/", "\\")) or os.path.isabs(relative) or "\\" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base or not os.path.isfile(path):
        return None
    return path


def create_app(review: Review):
    """The review page's Flask app: the page and its files, and the JSON API."""
    from flask import Flask

    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False            # "//etc/passwd" stays a path the file route refuses
    page_routes(app, review)
    api_routes(app, review)
    return app


def page_routes(app, review: Review) -> None:
    """The page, its assets, the summary page, rendered snippets and the served folders."""
    from flask import Response, abort, jsonify, request, send_file

    session = review.session

    @app.get("/")
    def index():
        return send_file(os.path.join(ASSETS, "index.html"), mimetype="text/html", max_age=0)

    @app.get("/assets/<name>")
    def asset(name):
        path = safe_file(ASSETS, name)
        if path is None:
            abort(404)
        return send_file(path, max_age=0)

    @app.get("/summary")
    def summary_page():
        return Response(summary_html(session.write_summary()), mimetype="text/html")

    @app.get("/media/<kind>/<name>")
    def media(kind, name):
        item, _, ext = name.rpartition(".")
        if kind not in ("image", "audio") or ext != {"image": "png", "audio": "wav"}[kind] or \
                item not in session.units:
            abort(404)
        expand = max(1, min(64, request.args.get("expand", 1, type=int))) if kind == "audio" else 1
        try:
            data = review.rendered(kind, item, expand)
        except Exception as error:
            return jsonify({"error": str(error)}), 400
        return Response(data, mimetype="image/png" if kind == "image" else "audio/wav",
                        headers={"Cache-Control": "no-store"})

    @app.get("/files/<root>/<path:relative>")
    def files(root, relative):
        base = {"recordings": review.args.recordings, "out": review.args.out}.get(root)
        path = safe_file(base, relative) if base else None
        if path is None:
            abort(404)
        return send_file(path, conditional=True, max_age=0)


def api_routes(app, review: Review) -> None:
    """What the page asks: classes, the next item, decisions, undo, summary, 'more like this'."""
    from flask import jsonify, request

    session = review.session

    @app.get("/api/classes")
    def classes():
        rows = [{"name": name, "answered": session.progress(name)[0], "planned": session.progress(name)[1],
                 "detections": sum(s.size for s in plan.strata if s.above)}
                for name, plan in session.plans.items()]
        return jsonify({"classes": rows, "labels": review.classes, "active": review.learner is not None,
                        "search": review.args.store is not None, "expansion": review.expansion,
                        "learner": review.learner.status() if review.learner else None})

    @app.get("/api/next")
    def next_item():
        unit = session.next(request.args.get("class") or None, request.args.get("client", ""))
        if unit is None:
            return jsonify({"item": None})
        following = session.next(request.args.get("class") or None, "")
        if following is not None and following.id != unit.id:
            review.prefetch(following)
        return jsonify(review.item_json(unit))

    @app.post("/api/decision")
    def decision():
        body = request.get_json(silent=True) or {}
        try:
            entry = session.decide(str(body.get("item", "")), str(body.get("decision", "")), body.get("label"),
                                   str(body.get("comment") or ""), str(body.get("client", "")))
        except Exception as error:                    # ReviewError and file errors: a message, not a trace
            return jsonify({"error": str(error)}), 400
        if review.learner is not None:
            review.learner.answered()
        return jsonify({"ok": True, "item": entry["item"], "progress": dict(zip(
            ("answered", "planned"), session.progress(session.units[entry["item"]].cls)))})

    @app.post("/api/undo")
    def undo():
        body = request.get_json(silent=True) or {}
        last = session.undo(str(body.get("client", "")))
        return jsonify({"undone": last["item"] if last else None})

    @app.get("/api/summary")
    def summary():
        return jsonify(session.write_summary())

    @app.post("/api/similar")
    def similar():
        body = request.get_json(silent=True) or {}
        if review.args.store is None:
            return jsonify({"error": "start review.py with --store STORE for 'more like this'"}), 400
        from embedding.review_link import more_like_this

        try:
            added = more_like_this(review, str(body.get("item", "")), int(body.get("top", 10)))
        except Exception as error:
            return jsonify({"error": str(error)}), 400
        return jsonify({"queued": added})


# --------------------------------------------------------------------- summary page
def precision_svg(curve, width: int = 320, height: int = 180) -> str:
    """Estimated precision of everything scoring at least t, against t."""
    if not curve:
        return "<p>no answers yet</p>"
    pad = 30
    x = lambda t: pad + t * (width - 2 * pad)
    y = lambda p: height - pad - p * (height - 2 * pad)
    points = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in sorted(curve))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="precision against score">'
            f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" '
            f'stroke="#888"/><polyline points="{points}" fill="none" stroke="#2a6" stroke-width="2"/>'
            f'<text x="{width / 2}" y="{height - 5}" text-anchor="middle" font-size="11">score threshold</text>'
            f'<text x="10" y="{height / 2}" font-size="11" transform="rotate(-90 10 {height / 2})" '
            f'text-anchor="middle">precision</text><text x="{pad}" y="{height - pad + 12}" font-size="10">0</text>'
            f'<text x="{width - pad}" y="{height - pad + 12}" font-size="10" text-anchor="end">1</text></svg>')


def _fmt(value, percent=True) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.2f}"


def _ci(pair, percent=True) -> str:
    if not pair or pair[0] is None:
        return ""
    return f" [{_fmt(pair[0], percent)} – {_fmt(pair[1], percent)}]"


def summary_html(summary: dict) -> str:
    rows = []
    for name, c in summary["classes"].items():
        bound = " (lower bound)" if c["call_density_is_lower_bound"] else ""
        rows.append(f"<h2>{html.escape(name)}</h2><p>{c['reviewed']} reviewed of {c['sampled']} sampled "
                    f"({c['detections']} detections)</p><table>"
                    f"<tr><th>precision</th><td>{_fmt(c['precision'])}{_ci(c['precision_ci95'])}</td></tr>"
                    f"<tr><th>recall</th><td>{_fmt(c['recall'])}{_ci(c['recall_ci95'])}</td></tr>"
                    f"<tr><th>calls per hour{bound}</th><td>{_fmt(c['call_density_per_hour'], False)}"
                    f"{_ci(c['call_density_ci95'], False)}</td></tr>"
                    f"<tr><th>threshold for precision {summary['target_precision']}</th>"
                    f"<td>{_fmt(c['threshold_for_target_precision'], False)}"
                    f"{_ci(c['threshold_for_target_precision_ci95'], False)}</td></tr></table>"
                    + precision_svg(c["precision_curve"]))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Review summary</title>"
            "<link rel='stylesheet' href='/assets/review.css'></head><body><p><a href='/'>back to the review</a></p>"
            f"<h1>Review summary</h1><p>{summary['recordings']} recording(s), {summary['hours']:.2f} h of audio. "
            f"{html.escape(summary['estimators'])}.</p>" + "".join(rows) + "</body></html>")


# --------------------------------------------------------------------------- main
def open_review(args) -> Review:
    from data.features import FeatureOptions
    from data.snippets import expansion_for
    from evaluation.review_session import ReviewSession, load_units

    options, classes, fmax, freq = None, [], None, ("", "")
    if args.model_path:
        from models.model_file import load_model

        spec = load_model(args.model_path).spec
        options = FeatureOptions.from_data_opts(spec.data_opts, spec.min_max_norm)
        classes, fmax, freq = spec.class_map.names, options.fmax, (options.fmin, options.fmax)
    units, seconds, all_logs = load_units(args.predictions, args.recordings)
    if not classes:
        classes = sorted({u.cls for u in units} - {"unknown"})
    session = ReviewSession(units, seconds, all_logs, args.out, args.per_class, args.bins, args.seed,
                            args.target_precision, classes, freq)
    session.write_all_tables()
    expansion = args.time_expansion or (expansion_for(fmax) if fmax else 1)
    review = Review(args, session, options, expansion, classes)
    if args.active:
        if not args.store:
            raise ValueError("--active needs --store (an embedding store of the recordings)")
        from embedding.active import ActiveLearner

        review.learner = ActiveLearner(review)
    return review


def serve(review: Review, host: str, port: int, ready=None):
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)          # no line per request
    server = make_server(host, port, create_app(review), threaded=True)
    address = f"http://{host}:{server.server_port}/"
    print(f"Review page: {address}  ({len(review.session.units)} units, answers in "
          f"{os.path.join(review.args.out, 'review_journal.jsonl')}; Ctrl-C stops)", flush=True)
    if ready is not None:
        ready(server, address)
    server.serve_forever()


def main(argv: Optional[List[str]] = None) -> int:
    from utils.logging import setup_logger

    args = build_parser().parse_args(argv)
    logger = setup_logger("REVIEW", None)
    from evaluation.review_session import ReviewError
    from models.model_file import ModelFileError
    from data.audio_io import AudioFileError

    try:
        if args.per_class < 1 or args.bins < 1:
            raise ValueError("--per_class and --bins must be at least 1")
        os.makedirs(args.out, exist_ok=True)
        review = open_review(args)
        serve(review, args.host, args.port)
    except (ReviewError, ModelFileError, AudioFileError, ValueError, OSError) as error:
        logger.error(str(error))
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
