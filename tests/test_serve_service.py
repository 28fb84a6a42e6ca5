"""The Service behind `uemctl serve`, without HTTP: which state an answer reports, adds racing
another process, the reload poller, shutdown, abandoned jobs, and the engine's read-only items."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'uem[serve]')")
from fastapi import HTTPException  # noqa: E402

from uem.engine import Engine  # noqa: E402
from uem.serve import ServeConfig  # noqa: E402
from uem.serve import service as service_mod  # noqa: E402
from uem.serve.api import _run  # noqa: E402
from uem.serve.service import Service, Upload  # noqa: E402
from uem.testing.bundles import make_bundle  # noqa: E402
from serve_helpers import green_sketches  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serve_service"))


def sketches(n: int, seed: int = 5) -> list[bytes]:
    return green_sketches(n, seed)


def service(bundle: Path, tmp_path: Path, **kw) -> Service:
    return Service(bundle, ServeConfig(allow_add=True, media=str(tmp_path / "media"), reload_interval_s=0, **kw))


def test_an_answer_reports_the_state_that_answered(base, fresh, tmp_path):
    """Another process commits while every query is being embedded: each answer still names the
    state it was searched in (the one before that commit), never a later one."""
    svc = service(fresh, tmp_path)
    other = Engine.open(fresh)
    pics = iter(sketches(4))
    enc = svc.engine.snapshot().encoder
    real_embed = enc.embed

    def embed_then_commit(x):
        out = real_embed(x)
        path = tmp_path / f"other{time.monotonic_ns()}.png"
        path.write_bytes(next(pics))
        assert other.add("sketch", [path]) == 1
        svc.engine.reload()
        return out

    query = (base.parent / "data" / "photo" / "red" / "0.png").read_bytes()
    try:
        enc.embed = embed_then_commit
        for _ in range(2):
            before = svc.engine.snapshot().generation
            ans = svc.query(query, "sketch", 5, None, False)
            assert svc.engine.snapshot().generation == before + 1  # a commit landed during the query
            assert (ans.generation, ans.count) == (before, 12 + before - 1)
    finally:
        enc.embed = real_embed
        other.close()
        svc.close()


def test_an_add_reports_what_another_worker_added_as_present(fresh, tmp_path):
    """Two workers (two engines on one bundle), no reloads: the second one's answer is still right."""
    x, y = sketches(2)
    one, two = service(fresh, tmp_path), service(fresh, tmp_path)
    try:
        assert one.add("sketch", [Upload("x.png", x)])["added"] == 1
        out = two.add("sketch", [Upload("x.png", x), Upload("y.png", y)])
        assert (out["added"], out["present"], out["count"], out["generation"]) == (1, 1, 14, 3)
        assert [i["new"] for i in out["items"]] == [False, True]
    finally:
        one.close()
        two.close()


def test_item_path_reads_one_state(fresh, tmp_path, monkeypatch):
    """A state change between reading the ids and reading the row cannot give another item's file."""
    svc = service(fresh, tmp_path)
    try:
        rows = list(svc.engine.items("sketch"))
        later = rows[1:] + rows[:1]  # another state, in which row 0 is another item
        states = iter([rows, later, later])
        monkeypatch.setattr(svc.engine, "items", lambda domain: next(states))
        assert svc.item_path("sketch", rows[0]["id"]) == Path(rows[0]["path"])
    finally:
        svc.close()


def test_the_reload_poller_survives_unexpected_errors(fresh, tmp_path, monkeypatch, caplog):
    svc = Service(fresh, ServeConfig(reload_interval_s=0.01))
    calls = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("disk on fire")
        return False

    monkeypatch.setattr(svc, "reload_if_changed", flaky)
    svc.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) >= 4 and svc._poller.is_alive()
        assert "not reloading the bundle: RuntimeError: disk on fire" in caplog.text
    finally:
        svc.close()


def test_close_waits_for_a_reload_before_closing_the_engine(fresh, tmp_path, monkeypatch):
    monkeypatch.setattr(service_mod, "POLLER_JOIN_S", 0.05)
    svc = Service(fresh, ServeConfig(reload_interval_s=0.01))
    in_reload, release, events = threading.Event(), threading.Event(), []

    def slow_reload() -> bool:
        with svc.write_lock:
            in_reload.set()
            release.wait(10)
            events.append("reload done")
        return False

    real_close = svc.engine.close
    monkeypatch.setattr(svc, "reload_if_changed", slow_reload)
    monkeypatch.setattr(svc.engine, "close", lambda: (events.append("engine closed"), real_close()))
    svc.start()
    assert in_reload.wait(10)
    closer = threading.Thread(target=svc.close)
    closer.start()
    time.sleep(0.3)  # well past POLLER_JOIN_S: close is waiting for the reload
    assert events == []
    release.set()
    closer.join(10)
    assert events == ["reload done", "engine closed"]


def test_an_abandoned_job_that_fails_later_logs_nothing():
    seen: list[dict] = []

    def late_failure():
        time.sleep(0.2)
        raise RuntimeError("failed after its client was answered")

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        with ThreadPoolExecutor(1) as pool:
            with pytest.raises(HTTPException) as e:
                await _run(pool, late_failure, 0.05, "the query")
            assert e.value.status_code == 503 and "still running" in e.value.detail
            await asyncio.sleep(0.4)  # the job fails meanwhile
        gc.collect()
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    gc.collect()  # the abandoned future goes now, if not before
    assert not [c for c in seen if "never retrieved" in c.get("message", "")], seen


def test_engine_items_are_read_only(fresh):
    with Engine.open(fresh) as eng:
        items = eng.items("sketch")
        first = dict(items[0])
        items[0]["path"] = "/etc/passwd"
        assert eng.items("sketch")[0] == first
        assert not hasattr(items, "append")
        with pytest.raises(TypeError):
            items[0] = {}  # type: ignore[index]
        # a state whose items are a plain list: the caller gets copies in a tuple
        snap = eng.snapshot()
        snap.states["sketch"] = replace(snap.states["sketch"], items=list(items))
        got = eng.items("sketch")
        assert isinstance(got, tuple) and got == tuple(snap.states["sketch"].items)
        got[0]["path"] = "/etc/passwd"
        assert snap.states["sketch"].items[0] == first
