"""The JSON shapes of the `/v1` API (pydantic models: they are what /openapi.json documents)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="One line saying what was wrong.")


class HitOut(BaseModel):
    id: str = Field(description="The item's id in the bundle.")
    score: float = Field(description="Cosine similarity in the aligned space (higher is closer).")
    rank_score: Optional[float] = Field(None, description="The CSLS score the hits are ordered by "
                                        "(null: ordered by cosine).")
    image: str = Field(description="URL of the item's picture (GET).")


class QueryOut(BaseModel):
    accepted: bool = Field(description="False: \"no match\", the concept does not exist in the domain.")
    reason: str = Field(description="The engine's evidence for its answer, in words.")
    score: float = Field(description="Open-set score: higher means more likely no match.")
    source: Optional[str] = Field(None, description="The query's domain: given, or inferred.")
    domain: str = Field(description="The domain searched.")
    k: int
    hits: list[HitOut] = Field(description="Best first; empty when rejected (unless no_reject).")
    generation: int = Field(description="The bundle generation that answered.")
    count: int = Field(description="Items in the domain in that generation.")
    took_ms: float = Field(description="Time spent decoding, embedding and searching.")


class DomainOut(BaseModel):
    name: str
    count: int


class DomainsOut(BaseModel):
    generation: int
    domains: list[DomainOut]


class AddedItem(BaseModel):
    id: str = Field(description="The picture's sha256 (content-addressed: the same bytes, the same id).")
    filename: str = Field(description="The uploaded file's name, as sent.")
    new: bool = Field(description="False: the domain already held this picture.")
    image: str


class AddOut(BaseModel):
    domain: str
    added: int
    present: int = Field(description="Uploaded pictures the domain already held (not added twice).")
    generation: int = Field(description="The bundle generation after the add.")
    count: int = Field(description="Items in the domain after the add.")
    items: list[AddedItem]


class HealthOut(BaseModel):
    status: str
    generation: int = Field(description="The bundle generation this process serves.")
    domains: int
    process: int = Field(description="The id of the server process that answered (one per worker).")


InfoOut = dict[str, Any]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input: not a picture, a bad parameter."},
    404: {"model": ErrorBody, "description": "Unknown domain or item."},
    408: {"model": ErrorBody, "description": "The request body did not arrive in time."},
    413: {"model": ErrorBody, "description": "The request body is over the upload limit."},
    503: {"model": ErrorBody, "description": "Timed out waiting or running; or the bundle is unavailable."},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    403: {"model": ErrorBody, "description": "Adding pictures is turned off on this server."},
}
