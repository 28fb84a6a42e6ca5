"""The --backend / --uri options shared by the engine commands (query, index add): the engine's
own check (engine.backend.check_choice), worded for the command line."""

from __future__ import annotations

from ..engine.backend import check_choice
from ..engine.errors import UemError


def backend_options(backend: str | None, uri: str | None) -> dict:
    """Engine.open keyword arguments; a bad combination is a one-line user error."""
    try:
        check_choice(backend, uri, names=("--backend", "--uri"))
    except ValueError as e:
        raise UemError(str(e)) from None
    if uri is not None:
        from ..engine.milvus import normalise_uri

        try:
            normalise_uri(uri)
        except ValueError as e:
            raise UemError(f"--uri: {e}") from None
    return {"backend": backend, "uri": uri}
