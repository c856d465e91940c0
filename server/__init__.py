"""The Flask track server: the hub's files with byte ranges, the JSON API and the page.

Production: ``gunicorn -c server/gunicorn.conf.py 'epiformer.server:create_app()'`` with the settings in
``EPIFORMER_*`` environment variables (see :mod:`epiformer.server.server_config`); ``epiformer serve`` does the
same for one machine.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

from epiformer.server.server_config import ServerConfig, ServerConfigError, body_limit_message, load_config

# The page: static/ beside this package, both in the repository (static/ at its top level) and
# installed (epiformer/static).
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
GUNICORN_CONF = Path(__file__).resolve().parent / "gunicorn.conf.py"
log = logging.getLogger("epiformer.server")
# The page loads everything from this origin (igv.js is served from /static/vendor): nothing else
# may run in it, and no other site may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; connect-src 'self' blob:; worker-src 'self' blob:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


def gunicorn_command() -> list[str]:
    """The production server's command line: gunicorn, its configuration file, the app factory."""
    return [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "epiformer.server:create_app()"]


def ensure_hub(precompute_dir: Path, hub_dir: Path, annotation: str = "") -> Path:
    """Build the hub of ``precompute_dir`` into ``hub_dir`` when it is missing, older than the
    precompute's manifest (a regenerated run), without SHA256SUMS (a hub from before the
    checksums) or holding another annotation than ``annotation``; returns ``hub_dir``."""
    from epiformer.trackhub import SUMS_FILE, HubOptions, annotation_source, build_hub

    hub = hub_dir / "hub.txt"
    manifest = precompute_dir / "manifest.json"
    recorded = hub_dir / "annotation" / "source.json"
    held = json.loads(recorded.read_text()) if recorded.is_file() else None
    if (not hub.is_file() or not (hub_dir / SUMS_FILE).is_file()
            or hub.stat().st_mtime < manifest.stat().st_mtime
            or held != (annotation_source(annotation) if annotation else None)):
        build_hub(precompute_dir, hub_dir, HubOptions(annotation=annotation or None))
    return hub_dir


def create_app(config: ServerConfig | Mapping[str, Any] | None = None) -> Flask:
    """The app. ``config`` is a :class:`ServerConfig`, or settings laid over the environment's."""
    from epiformer.io.manifest import read_manifest

    cfg = config if isinstance(config, ServerConfig) else load_config(config)
    if not cfg.precompute_dir:
        raise ServerConfigError("no precompute folder: set EPIFORMER_PRECOMPUTE_DIR (or precompute_dir), "
                                "or run epiformer serve PRECOMPUTE_DIR")
    precompute_dir = Path(cfg.precompute_dir)
    manifest = read_manifest(precompute_dir)
    hub_dir = ensure_hub(precompute_dir, Path(cfg.hub_dir) if cfg.hub_dir else precompute_dir / "hub", cfg.annotation)

    from epiformer.server.api import api
    from epiformer.server.hub_files import files
    from epiformer.server.prediction_api import ClientSlots, predictions

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.debug = False   # never, whatever FLASK_DEBUG says: errors are JSON without tracebacks
    app.config.update(EPIFORMER=cfg, MANIFEST=manifest, HUB_DIR=str(hub_dir), MAX_CONTENT_LENGTH=cfg.max_body_bytes,
                      JSON_SORT_KEYS=False,
                      PREDICTION_SLOTS=ClientSlots(*cfg.prediction_limits()))
    if cfg.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg.proxy_hops, x_proto=cfg.proxy_hops)  # type: ignore[method-assign]

    app.register_blueprint(files)
    app.register_blueprint(api)
    app.register_blueprint(predictions)
    if cfg.models:
        from epiformer.server.on_demand import ServerPredictor

        app.config["PREDICTOR"] = ServerPredictor(cfg, manifest)

    @app.get("/")
    def index() -> Response:
        """The page: igv.js over this server's genome and tracks (static/index.html)."""
        response = app.send_static_file("index.html")
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(PAGE_HEADERS)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(err: Exception) -> Response:
        """A bug: logged with its traceback, answered as a plain JSON 500 that reveals nothing."""
        if isinstance(err, HTTPException):
            return http_error(err)
        log.exception("unexpected error in %s %s", request.method, json.dumps(request.path))
        return http_error(InternalServerError())

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        """Every HTTP error is JSON naming the problem, keeping the error's own headers
        (Content-Range on a 416, Retry-After on a 429, Allow on a 405)."""
        message = err.description
        if err.code == 413:
            message = body_limit_message(cfg.max_body_bytes)
        response = jsonify({"error": {"status": err.code, "message": message}})
        response.status_code = err.code or 500
        for name, value in err.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        if request.path.startswith("/hub/"):
            from epiformer.server.hub_files import CORS_HEADERS

            response.headers.update(CORS_HEADERS)
        return response

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if cfg.log_requests:
            log.info(json.dumps({"method": request.method, "path": request.path, "status": response.status_code,
                                 "bytes": response.content_length, "ms": round((time.perf_counter() - g.get(
                                     "started", time.perf_counter())) * 1000, 1),
                                 "remote": request.remote_addr, "range": request.headers.get("Range"),
                                 "pid": os.getpid()}))
        return response

    return app
