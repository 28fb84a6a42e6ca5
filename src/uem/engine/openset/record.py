"""Reading a rule's calibration record from the manifest: one place that turns any malformed
record into the BundleError a damaged bundle must give (never a KeyError or TypeError)."""

from __future__ import annotations

from typing import Callable, TypeVar

from ..errors import BundleError

T = TypeVar("T")


def parse_record(record: object, name: str, parse: Callable[[dict], T]) -> T:
    """`parse(record)` for a dict record (None reads as {}); anything malformed -> BundleError."""
    record = {} if record is None else record
    if not isinstance(record, dict):
        raise BundleError(f"invalid open-set calibration ({name} must be an object)")
    try:
        return parse(record)
    except (AttributeError, TypeError, ValueError) as e:
        raise BundleError(f"invalid open-set calibration ({e})") from None
