"""gunicorn settings for the track server:

    gunicorn -c server/gunicorn.conf.py 'epiformer.server:create_app()'

Settings come from ``EPIFORMER_*`` variables (see server/config.py): EPIFORMER_PRECOMPUTE_DIR,
EPIFORMER_MODELS, EPIFORMER_BIND, EPIFORMER_WORKERS, ... The settings and hooks themselves are
:func:`epiformer.server.production.gunicorn_options`, the same ``epiformer serve`` uses.
"""
from epiformer.server.production import gunicorn_options
from epiformer.server.server_config import load_config

globals().update(gunicorn_options(load_config()))
