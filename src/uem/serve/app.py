"""`create_app(bundle, config)`: the FastAPI application of `uemctl serve`.

The app owns one Service (the shared engine, its thread pools, the media folder); the routes under
`/v1` are in api.py, the page at `/` is static HTML/JS/CSS from `static/` (no build step, nothing
from a CDN), `/openapi.json` documents the API, `/healthz` and `/metrics` are for operators.
Every error answers `{"error": "one line"}`.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ..engine import Engine
from ..engine.errors import BundleError, ImageError, UemError, UnknownDomainError
from .api import router
from .config import ServeConfig
from .metrics import CONTENT_TYPE
from .middleware import LimitsMiddleware, MetricsMiddleware, SecurityHeadersMiddleware
from .schemas import HealthOut
from .service import Service, one_line

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("uem.serve")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errs = exc.errors()
    if not errs:
        return "bad request"
    e = errs[0]
    where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
    return f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"not found: {_request.url.path}"
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_request: Request, exc: RequestValidationError):
        return _error(400, _validation_message(exc))

    @app.exception_handler(UnknownDomainError)
    async def unknown_domain(_request: Request, exc: UnknownDomainError):
        return _error(404, str(exc))

    @app.exception_handler(ImageError)
    async def bad_image(_request: Request, exc: ImageError):
        return _error(400, str(exc))

    @app.exception_handler(BundleError)
    async def bundle_unavailable(request: Request, exc: BundleError):
        log.error("uem serve: bundle error: %s", one_line(str(exc)))
        return _error(503, "the bundle is unavailable: " + request.app.state.service.redact(str(exc)))

    @app.exception_handler(UemError)
    async def uem_error(request: Request, exc: UemError):
        return _error(400, request.app.state.service.redact(str(exc)))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception):
        log.exception("uem serve: internal error")
        return _error(500, "internal server error")


def trusted_hosts(host: str) -> list[str]:
    """The Host header names a loopback-bound server answers to: this machine's own names."""
    bound = host.strip("[]").lower()
    return sorted({"localhost", "127.0.0.1", "[::1]", f"[{bound}]" if ":" in bound else bound})


def create_app(bundle: str | os.PathLike | Engine, config: ServeConfig | None = None) -> FastAPI:
    """The app serving `bundle` (a path, verified and opened here, or an open Engine the caller
    keeps owning). Raises BundleError for a missing or tampered bundle: nothing starts then."""
    config = config or ServeConfig()
    service = Service(bundle, config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="uem", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Cross-domain image retrieval that answers \"no match\" when a "
                              "concept does not exist in the domain searched.")
    app.state.service = service
    app.state.config = config
    _install_error_handlers(app)
    app.include_router(router)

    @app.get("/healthz", response_model=HealthOut, summary="Liveness: the engine answers")
    async def healthz() -> dict:
        snap = service.engine.snapshot()
        return {"status": "ok", "generation": snap.generation, "domains": len(snap.states),
                "process": os.getpid()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(service.gauges()), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost last: metrics see every answer, limits act before any route reads a body.
    app.add_middleware(LimitsMiddleware, max_bytes=config.max_upload_bytes,
                       read_timeout_s=config.read_timeout_s, max_bodies=config.body_slots)
    if config.loopback:  # DNS rebinding: another site's name resolving to 127.0.0.1 is refused
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts(config.host))
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app
