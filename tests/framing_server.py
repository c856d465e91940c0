"""gunicorn with the production settings and worker (epiformer.server.production) around a tiny
WSGI app, for the framing tests: ``python -m tests.framing_server SETTINGS_JSON``, where the JSON
holds ServerConfig fields and, under "gunicorn", gunicorn settings laid over production's.

The app: ``/healthz`` answers "ok" without reading the request body; any other path reads the
body and answers its length.
"""
from __future__ import annotations

import json
import sys
from typing import Callable, Iterable

from gunicorn.app.base import BaseApplication

from epiformer.server.production import gunicorn_options
from epiformer.server.server_config import ServerConfig


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """"ok" for /healthz (body unread), else the number of body bytes read."""
    if environ["PATH_INFO"] == "/healthz":
        answer = b"ok"
    else:
        answer = str(len(environ["wsgi.input"].read())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


def main() -> None:
    settings = json.loads(sys.argv[1])
    overrides = settings.pop("gunicorn", {})
    options = {**gunicorn_options(ServerConfig(**settings)), **overrides}

    class Application(BaseApplication):
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> Callable:
            return app

    Application().run()


if __name__ == "__main__":
    main()
