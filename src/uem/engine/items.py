"""A domain's items (items.jsonl rows) held compactly: the file's bytes + line offsets.

Why: a query reads only its k hits, but a parsed list of dicts costs ~460 B per item (~46 MB of
RSS and ~0.4 s of open time per 100k items). `ItemList` keeps the verified file as one bytes object
(~75 B per item) and parses a row when it is read. It behaves as a read-only sequence of dicts
(len, index, slice, iterate, compare, `+ list`); every row is still validated once at load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Iterator

import numpy as np


class ItemsFormatError(ValueError):
    """items.jsonl is not one JSON object with string "id" and "path" per line."""


def _row_ok(obj: object) -> bool:
    return type(obj) is dict and type(obj.get("id")) is str and type(obj.get("path")) is str


class ItemList(Sequence):
    """Read-only rows of an items.jsonl, parsed on access."""

    __slots__ = ("_data", "_starts", "_ends")

    def __init__(self, data: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self._data, self._starts, self._ends = data, starts, ends

    @classmethod
    def parse(cls, data: bytes) -> "ItemList":
        """Validate every line (UTF-8, JSON object, string id and path) and index the rows.

        One json.loads over the whole file (as an array) instead of one per line; on failure the
        lines are parsed one by one to say which is wrong. Raises ItemsFormatError.
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ItemsFormatError(f"not UTF-8 ({e})") from None
        if data and not data.endswith(b"\n"):  # a last line without its newline still counts
            data, text = data + b"\n", text + "\n"
        arr = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(arr == 10)
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else ends.astype(np.int64)
        rows = None
        try:
            rows = json.loads("[" + text[:-1].replace("\n", ",") + "]") if data else []
            ok = len(rows) == len(ends) and all(_row_ok(r) for r in rows)
        except (ValueError, RecursionError):
            ok = False
        del rows  # validated; only the bytes are kept
        if not ok:
            cls._explain(data, starts, ends)
        return cls(data, starts, ends.astype(np.int64))

    @staticmethod
    def _explain(data: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        for lineno, (a, b) in enumerate(zip(starts.tolist(), ends.tolist()), 1):
            try:
                obj = json.loads(data[a:b])
            except (ValueError, RecursionError) as e:
                raise ItemsFormatError(f"line {lineno}: {e}") from None
            if not _row_ok(obj):
                raise ItemsFormatError(f"line {lineno} lacks a string id/path")
        raise ItemsFormatError("a line is not a JSON object")

    def __len__(self) -> int:
        return len(self._starts)

    def _row(self, i: int) -> dict:
        return json.loads(self._data[self._starts[i]:self._ends[i]])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError("item index out of range")
        return self._row(i % n)

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self._row(i)

    def __add__(self, other) -> list[dict]:
        return list(self) + list(other)

    def __radd__(self, other) -> list[dict]:
        return list(other) + list(self)

    def __eq__(self, other) -> bool:
        if isinstance(other, ItemList):
            return self._data == other._data
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ItemList({len(self)} items, {len(self._data)} bytes)"
