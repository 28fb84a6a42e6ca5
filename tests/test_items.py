"""ItemList: a domain's items.jsonl kept as bytes, validated once, parsed on access."""

from __future__ import annotations

import json

import pytest

from uem.engine.items import ItemList, ItemsFormatError

ROWS = [{"id": f"a{i}", "path": f"/x/{i}.png", "label": "é\nx"} for i in range(5)]
DATA = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in ROWS)


def test_behaves_like_the_list_of_dicts():
    items = ItemList.parse(DATA)
    assert len(items) == 5 and items == ROWS and list(items) == ROWS
    assert items[0] == ROWS[0] and items[-1] == ROWS[-1] and items[1:4] == ROWS[1:4]
    assert items + [{"id": "z", "path": "z"}] == ROWS + [{"id": "z", "path": "z"}]
    assert {it["id"] for it in items} == {r["id"] for r in ROWS}
    with pytest.raises(IndexError):
        items[5]
    assert ItemList.parse(DATA[:-1]) == ROWS  # a last line without its newline still counts
    assert len(ItemList.parse(b"")) == 0


@pytest.mark.parametrize("bad, why", [
    (b'{"id":"a","path":"b"}\n[1]\n', "line 2 lacks"),
    (b'{"id":"a"}\n', "line 1 lacks"),
    (b'{"id":1,"path":"b"}\n', "line 1 lacks"),
    (b'{"id":"a","path":"b"}\n\n', "line 2"),
    (b'{"id":"a","path":"b"},{"id":"c","path":"d"}\n', "line 1"),
    (b'\xff\n', "not UTF-8"),
])
def test_every_line_is_validated(bad, why):
    with pytest.raises(ItemsFormatError, match=why):
        ItemList.parse(bad)
