"""`uemctl data ...` — benchmark data set builders."""

from __future__ import annotations

from .root import data_app
