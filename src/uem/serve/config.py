"""`ServeConfig`: everything `uemctl serve` can be told, as one self-validating dataclass.

Plain data (no FastAPI here), so the CLI, the app factory, the tests and the benchmark build it the
same way, and a worker process of a multi-worker server rebuilds it from JSON (`to_json` /
`from_json`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MB = 1024 * 1024
TOKEN_ENV = "UEM_TOKEN"


def default_media(bundle: str | os.PathLike) -> Path:
    """Where uploaded pictures go unless told: beside the bundle, `<bundle>.media`."""
    b = Path(bundle)
    return b.with_name(b.name + ".media")


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_query_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServeConfig:
    """How the HTTP service runs. Every field is checked when the object is made (ValueError)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1                      # uvicorn worker processes, each with its own engine
    media: str | None = None              # folder for uploaded pictures (None: <bundle>.media)
    allow_add: bool = False               # POST /v1/domains/{domain}/items; off: 403
    token: str | None = None              # bearer token the write endpoints require (None: none)
    max_upload_bytes: int = 20 * MB       # request body limit (413 beyond)
    max_k: int = 100                      # largest k a query may ask for
    max_files: int = 64                   # pictures per add request
    query_threads: int = 0                # thread pool for queries (0: min(4, cores))
    engine_threads: int | None = None     # onnxruntime threads per query (None: cores / query_threads)
    query_timeout_s: float = 30.0         # a query waiting or running longer answers 503
    add_timeout_s: float = 300.0          # an add waiting or running longer answers 503 (it may still commit)
    read_timeout_s: float = 60.0          # receiving a request body longer answers 408
    max_bodies: int = 0                   # request bodies held at once per process (0: 4 x query threads)
    reload_interval_s: float = 2.0        # how often to look for another process's commit (0: never)

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError("host must be a non-empty string")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port!r}")
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be 1..64, got {self.workers!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token
                                       or any(not 33 <= ord(c) <= 126 for c in self.token)):
            # HTTP headers arrive as latin-1: only printable ASCII can ever match what a client sends
            raise ValueError("token must be a non-empty string of printable ASCII characters without spaces")
        if not isinstance(self.max_bodies, int) or isinstance(self.max_bodies, bool) or self.max_bodies < 0:
            raise ValueError(f"max_bodies must be 0 or a positive integer, got {self.max_bodies!r}")
        for name in ("max_upload_bytes", "max_k", "max_files"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.query_threads, int) or not 0 <= self.query_threads <= 256:
            raise ValueError(f"query_threads must be 0..256, got {self.query_threads!r}")
        if self.engine_threads is not None and (not isinstance(self.engine_threads, int)
                                                or self.engine_threads < 1):
            raise ValueError(f"engine_threads must be a positive integer, got {self.engine_threads!r}")
        for name in ("query_timeout_s", "add_timeout_s", "read_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {v!r}")
        if not isinstance(self.reload_interval_s, (int, float)) or self.reload_interval_s < 0:
            raise ValueError(f"reload_interval_s must be >= 0, got {self.reload_interval_s!r}")

    # -- derived -----------------------------------------------------------------------------
    @property
    def pool_size(self) -> int:
        return self.query_threads or default_query_threads()

    @property
    def body_slots(self) -> int:
        """Requests with a body one process holds at once (bounds upload memory per process)."""
        return self.max_bodies or 4 * self.pool_size

    @property
    def loopback(self) -> bool:
        """Bound to this machine only (then requests must name it in their Host header)."""
        return is_loopback(self.host)

    @property
    def onnx_threads(self) -> int:
        if self.engine_threads is not None:
            return self.engine_threads
        return max(1, (os.cpu_count() or 1) // self.pool_size)

    def media_dir(self, bundle: str | os.PathLike) -> Path:
        return Path(self.media) if self.media else default_media(bundle)

    # -- passing to worker processes ---------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        d = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
