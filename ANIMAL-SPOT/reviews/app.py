"""The review page's web app (Flask): the page, its files, the summary page, rendered
snippets, the served folders, and the JSON interface::

    GET  /api/classes             the classes, their progress, the labels to choose from
    GET  /api/next[?class=C]      the next item, or {"item": null} when the sample is done
    POST /api/decision            {"item", "decision": correct|wrong|other|unsure|skip, "label", "comment"}
    POST /api/undo                take back the newest answer
    GET  /api/summary             the summary (also written to review_summary.json)
    POST /api/similar             {"item", "top"}: queue the ``top`` (1-100, default 10) stretches most like it
                                  (needs an embedding store)

Nothing is served but the page's own files and files below the recordings and the
review's folder. Requests must name the server's own address in their ``Host`` header
(a page of another site pointed at 127.0.0.1 by a DNS rebinding is refused), unless the
server listens on every interface because the user asked it to. HTML comes from the
templates in ``reviews/templates`` (escaped by Jinja2); the page's script writes
everything it receives as text, never as HTML.
"""

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Set

from flask import Flask, Response, abort, jsonify, render_template, request, send_file

from .media import Media
from .session import ReviewSession
from ..utils.paths import served_file

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC, TEMPLATES = os.path.join(HERE, "static"), os.path.join(HERE, "templates")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


MAX_SIMILAR = 100           # stretches one "more like this" may queue


def every_interface(host: str) -> bool:
    """Whether ``host`` is the unspecified address (listening on every interface)."""
    try:
        return not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass
class Review:
    """What the app serves: the session, its media, the folders, and the optional helpers
    of an embedding store (``similar(item, top) -> queued``, an active ``learner``)."""

    session: ReviewSession
    media: Media
    recordings: str
    out: str
    expansion: int = 1
    classes: List[str] = field(default_factory=list)
    similar: Optional[Callable[[str, int], int]] = None
    learner: Optional[object] = None
    hosts: Optional[Set[str]] = None              # Host headers answered (None: any)

    def listen(self, host: str, port: int) -> None:
        """The addresses this server answers to, once it listens on ``host:port``."""
        if every_interface(host):
            self.hosts = None
            return
        names = set(LOOPBACK) if host in LOOPBACK else {host}
        self.hosts = {f"{name}:{port}" for name in names} | ({f"[{host}]:{port}"} if ":" in host else set())

    def item_json(self, unit) -> dict:
        data = unit.public()
        data["image"] = f"/media/image/{unit.id}.png"
        data["audio"] = f"/media/audio/{unit.id}.wav?expand={self.expansion}"
        data["expansion"] = self.expansion
        data["progress"] = dict(zip(("answered", "planned"), self.session.progress(unit.cls)))
        return data


def create_app(review: Review) -> Flask:
    app = Flask(__name__, static_folder=None, template_folder=TEMPLATES)
    app.url_map.merge_slashes = False            # "//etc/passwd" stays a path the file route refuses

    @app.before_request
    def own_host():
        if review.hosts is not None and request.host not in review.hosts:
            abort(403)
    page_routes(app, review)
    api_routes(app, review)
    return app


def page_routes(app: Flask, review: Review) -> None:
    """The page, its assets, the summary page, rendered snippets and the served folders."""
    session = review.session

    @app.get("/")
    def index():
        return render_template("index.html")

    @app.get("/assets/<name>")
    def asset(name):
        path = served_file(STATIC, name)
        if path is None:
            abort(404)
        return send_file(path, max_age=0)

    @app.get("/summary")
    def summary_page():
        return render_template("summary.html", summary=session.write_summary(), figure=figure, points=curve_points)

    @app.get("/media/<kind>/<name>")
    def media(kind, name):
        item, _, ext = name.rpartition(".")
        if kind not in ("image", "audio") or ext != {"image": "png", "audio": "wav"}[kind] or \
                item not in session.units:
            abort(404)
        expand = max(1, min(64, request.args.get("expand", 1, type=int))) if kind == "audio" else 1
        try:
            data = review.media.rendered(kind, item, expand)
        except Exception as error:                    # an unreadable recording: a message, not a trace
            return jsonify({"error": str(error)}), 400
        return Response(data, mimetype="image/png" if kind == "image" else "audio/wav",
                        headers={"Cache-Control": "no-store"})

    @app.get("/files/<root>/<path:relative>")
    def files(root, relative):
        base = {"recordings": review.recordings, "out": review.out}.get(root)
        path = served_file(base, relative) if base else None
        if path is None:
            abort(404)
        return send_file(path, conditional=True, max_age=0)


def api_routes(app: Flask, review: Review) -> None:
    """What the page asks: classes, the next item, decisions, undo, summary, 'more like this'."""
    session = review.session

    @app.get("/api/classes")
    def classes():
        rows = [{"name": name, "answered": session.progress(name)[0], "planned": session.progress(name)[1],
                 "detections": sum(s.size for s in plan.strata if s.above)}
                for name, plan in session.plans.items()]
        return jsonify({"classes": rows, "labels": review.classes, "active": review.learner is not None,
                        "search": review.similar is not None, "expansion": review.expansion,
                        "learner": review.learner.status() if review.learner else None})

    @app.get("/api/next")
    def next_item():
        unit = session.next(request.args.get("class") or None, request.args.get("client", ""))
        if unit is None:
            return jsonify({"item": None})
        following = session.next(request.args.get("class") or None, "")
        if following is not None and following.id != unit.id:
            review.media.prefetch(following.id, review.expansion)
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
        if review.similar is None:
            return jsonify({"error": "start review.py with --store STORE for 'more like this'"}), 400
        try:
            top = int(body.get("top", 10))
        except (TypeError, ValueError):
            return jsonify({"error": "top must be a whole number"}), 400
        try:
            added = review.similar(str(body.get("item", "")), max(1, min(top, MAX_SIMILAR)))
        except Exception as error:
            return jsonify({"error": str(error)}), 400
        return jsonify({"queued": added})


def figure(value, interval=None, percent: bool = True) -> str:
    """``81.2 % [70.1 % - 90.3 %]`` (or ``0.42 [0.30 - 0.55]``); ``n/a`` without a value."""
    def text(v):
        return "n/a" if v is None else (f"{100 * v:.1f} %" if percent else f"{v:.2f}")
    shown = text(value)
    if value is not None and interval and interval[0] is not None:
        shown += f" [{text(interval[0])} \u2013 {text(interval[1])}]"
    return shown


def curve_points(curve, width: int = 320, height: int = 180, pad: int = 30) -> str:
    """The precision curve's points in the summary's plot (threshold across, precision up)."""
    return " ".join(f"{pad + t * (width - 2 * pad):.1f},{height - pad - p * (height - 2 * pad):.1f}"
                    for t, p in sorted(curve))
