"""`uemctl serve`: the HTTP service and its web page (FastAPI + uvicorn; `pip install 'uem[serve]'`).

config.py   ServeConfig, the one self-validating dataclass of options
app.py      create_app(bundle, config): the FastAPI app, its error handlers, the page, /metrics
api.py      the /v1 routes (query, add, domains, info, item pictures)
service.py  the shared engine, its thread pools, adds and reloads (no HTTP)
media.py    the content-addressed folder of uploaded pictures
metrics.py  Prometheus text format, by hand
middleware.py  body limits, read timeout and slots, request metrics, security headers
server.py   run(bundle, config): uvicorn, one or several worker processes
static/     index.html, app.js, style.css: the page (no build step, nothing from a CDN)

Imports only uem.engine from the rest of uem; `import uem.engine` never imports this package.
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
