"""What the serve tests share: a client that talks to the app as a local browser does, and
pictures of a concept the tiny test bundle's sketch domain lacks."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from uem.testing.bundles import draw, png_bytes


def local(app) -> TestClient:
    """A client that names the server as a browser on this machine does (Host: 127.0.0.1): a
    server bound to loopback answers only to its own names."""
    return TestClient(app, base_url="http://127.0.0.1")


def green_sketches(n: int, seed: int = 7) -> list[bytes]:
    """Pictures of a concept the sketch domain lacks, in its style (distinct bytes)."""
    rng = np.random.default_rng(seed)
    return [png_bytes(draw("green", "sketch", rng)) for _ in range(n)]
