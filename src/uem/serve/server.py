"""`run(bundle, config)`: serve a bundle with uvicorn, in this process or in N worker processes.

The bundle is verified before anything listens: a missing or tampered bundle raises BundleError
(the CLI prints one line and exits 2). With `workers > 1` every worker process opens its own
engine from the same bundle (uvicorn imports `app_from_env`); an add in one worker commits to disk
and the others pick it up within `reload_interval_s` (Service's reload poller).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ..engine import Engine
from ..engine.errors import UemError
from .config import ServeConfig

BUNDLE_ENV = "UEM_SERVE_BUNDLE"
CONFIG_ENV = "UEM_SERVE_CONFIG"


def app_from_env():
    """The app factory a uvicorn worker process calls (bundle and config come in the environment)."""
    from .app import create_app

    return create_app(os.environ[BUNDLE_ENV], ServeConfig.from_json(os.environ[CONFIG_ENV]))


# Connections (and requests) one process takes at once; beyond it uvicorn answers a plain-text 503.
# Per process: every worker applies it to itself. An idle or waiting connection costs little (uvicorn
# stops reading a body it has buffered 64 KB of); the bodies held in full are bounded separately,
# by ServeConfig.body_slots (LimitsMiddleware).
CONNECTIONS_PER_PROCESS = 256


def _uvicorn_options(config: ServeConfig) -> dict:
    return {"host": config.host, "port": config.port, "log_level": "info",
            "timeout_keep_alive": 5, "timeout_graceful_shutdown": 10,
            "limit_concurrency": CONNECTIONS_PER_PROCESS, "server_header": False}


def check_address(host: str, port: int) -> None:
    """UemError now, in one line, when the address cannot be listened on (in use, not local)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UemError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UemError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run(bundle: str | os.PathLike, config: ServeConfig) -> None:
    """Serve until interrupted. Raises BundleError before listening when the bundle is bad, and
    UemError when the address is taken."""
    import uvicorn

    bundle = Path(bundle).resolve()
    check_address(config.host, config.port)
    if config.allow_add and config.token is None and not config.loopback:
        print(f"uem serve: warning: anyone who can reach {config.host}:{config.port} can add pictures "
              "(set --token or $UEM_TOKEN)", file=sys.stderr, flush=True)
    where = f"http://{config.host}:{config.port}/"
    adds = "on" + (", token required" if config.token else "") if config.allow_add else "off"
    if config.workers == 1:
        from .app import create_app

        app = create_app(bundle, config)  # opens and verifies the bundle
        eng = app.state.service.engine
        print(f"uem serve: {where} ({bundle.name}: {', '.join(eng.domains)}; adding pictures {adds})",
              file=sys.stderr, flush=True)
        uvicorn.run(app, **_uvicorn_options(config))
        return
    with Engine.open(bundle) as eng:  # verify once before the workers start
        domains = ", ".join(eng.domains)
    os.environ[BUNDLE_ENV] = str(bundle)
    os.environ[CONFIG_ENV] = config.to_json()
    print(f"uem serve: {where} ({bundle.name}: {domains}; {config.workers} workers; adding pictures {adds})",
          file=sys.stderr, flush=True)
    uvicorn.run("uem.serve.server:app_from_env", factory=True, workers=config.workers,
                **_uvicorn_options(config))
