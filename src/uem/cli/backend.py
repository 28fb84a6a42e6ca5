"""The --backend / --uri options shared by the engine commands (query, index add)."""

from __future__ import annotations

from ..engine.errors import UemError

BACKENDS = ("hnswlib", "milvus")


def backend_options(backend: str | None, uri: str | None) -> dict:
    """Engine.open keyword arguments; a bad combination is a one-line user error."""
    if backend is not None and backend not in BACKENDS:
        raise UemError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if uri is not None and backend == "hnswlib":
        raise UemError("--uri is for the milvus backend")
    if uri is not None:
        from ..engine.milvus import normalise_uri

        try:
            normalise_uri(uri)
        except ValueError as e:
            raise UemError(f"--uri: {e}") from None
    return {"backend": backend, "uri": uri}
