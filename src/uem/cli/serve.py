"""`uemctl serve` — the HTTP service and web page over one bundle (needs `pip install 'uem[serve]'`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import typer

from ..engine.errors import MissingDependencyError, UemError
from .inputs import BUNDLE_HELP, chosen_bundle
from .root import app

@app.command("serve")
def serve(
    bundle: Optional[Path] = typer.Argument(None, help=BUNDLE_HELP, show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes, each with its own engine."),
    allow_add: bool = typer.Option(False, "--allow-add", help="Turn on POST /v1/domains/{domain}/items."),
    token: Optional[str] = typer.Option(None, "--token", envvar="UEM_TOKEN", show_envvar=True,
                                        help="Bearer token the write endpoints require."),
    media: Optional[Path] = typer.Option(None, "--media", file_okay=False,
                                         help="Folder for uploaded pictures (default: BUNDLE.media beside the bundle)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Request body limit in MB."),
    query_threads: int = typer.Option(0, "--query-threads", min=0, help="Queries answered at once (0: min(4, cores))."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Encoder threads per query "
                                          "(default: cores / query threads)."),
    query_timeout: float = typer.Option(30.0, "--query-timeout", min=0.001, help="Seconds a query may wait and run."),
    add_timeout: float = typer.Option(300.0, "--add-timeout", min=0.001, help="Seconds an add may wait and run."),
    read_timeout: float = typer.Option(60.0, "--read-timeout", min=0.001,
                                       help="Seconds a request body may take to arrive (408 beyond)."),
    reload_interval: float = typer.Option(2.0, "--reload-interval", min=0,
                                          help="Seconds between looks for other processes' commits (0: never)."),
) -> None:
    """Serve BUNDLE over HTTP: the JSON API under /v1 (document at /openapi.json) and a web page at /.

    A missing or tampered bundle is refused before anything listens (one line, exit 2).
    """
    path = chosen_bundle(bundle)
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        missing.append("python-multipart")
    if missing:
        raise MissingDependencyError(f"uemctl serve needs the serve extras (pip install 'uem[serve]'); "
                                     f"missing: {', '.join(missing)}")
    from ..serve import ServeConfig, server
    from ..serve.config import TOKEN_ENV

    if token is None and TOKEN_ENV in os.environ:
        token = os.environ[TOKEN_ENV]  # set but empty: refused below, never read as "no token"
    try:
        config = ServeConfig(host=host, port=port, workers=workers, allow_add=allow_add, token=token,
                             media=str(media) if media else None,
                             max_upload_bytes=max(1, int(max_upload_mb * 1024 * 1024)),
                             query_threads=query_threads, engine_threads=threads,
                             query_timeout_s=query_timeout, add_timeout_s=add_timeout,
                             read_timeout_s=read_timeout, reload_interval_s=reload_interval)
    except ValueError as e:
        raise UemError(f"{e} (--token or ${TOKEN_ENV})" if "token" in str(e) else str(e)) from None
    server.run(path, config)
