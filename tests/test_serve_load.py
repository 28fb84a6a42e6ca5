"""Concurrent queries plus adds against a real server on 127.0.0.1 (benchmarks/serve_load.py on a
tiny bundle, bounded in count and time): no errors, every answer from a whole state."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'uem[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'uem[serve]')")

from uem.engine import Engine  # noqa: E402
from uem.testing.bundles import make_bundle  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


def load_script():
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_concurrent_queries_and_adds_have_no_errors(tmp_path):
    report = load_script().main(["--tiny", "--clients", "1,8", "--requests", "240", "--adds", "3",
                                 "--add-batch", "2", "--add-every", "0.03", "--max-seconds", "30",
                                 "--json", str(tmp_path / "load.json")])
    assert report["errors"] == 0, report
    for i, lv in enumerate(report["levels"]):
        # the clients keep asking until the adds are done: every add commits while they are
        assert lv["http"]["requests"] >= 240 and lv["engine"]["requests"] == 240
        assert lv["adds"] == 3 and lv["add_errors"] == 0 and lv["adds_during_queries"] == 3
        # and a query after them sees every picture added so far (16 in the tiny bundle's domain)
        assert lv["count_after_adds"] == 16 + 3 * 2 * (i + 1)
    assert report["final_count"] == 28
    assert (tmp_path / "load.json").is_file()


def test_the_whole_state_check_catches_half_written_answers(tmp_path):
    mod = load_script()
    bundle = make_bundle(tmp_path)
    with Engine.open(bundle) as eng:
        batches = [mod.add_pictures(eng, "sketch", 4)[i:i + 2] for i in (0, 2)]
        check = mod.Consistency(eng, "sketch", batches)
        base_id = eng.items("sketch")[0]["id"]
    added = check.added
    ok = {"count": 14, "generation": 2, "hits": [{"id": base_id}, {"id": added[1]}]}
    assert check.check(ok) is None
    assert "whole adds" in check.check({**ok, "count": 13})                      # half a batch
    assert "does not match" in check.check({**ok, "generation": 3})              # count of another state
    assert "not in the state" in check.check({**ok, "hits": [{"id": added[2]}]})  # from a later add
    assert "not in the state" in check.check({**ok, "hits": [{"id": "sketch/none.png"}]})


def test_workers_each_pick_up_an_add_made_through_another(tmp_path):
    """`--workers 2`: two processes, one engine each; an add through one reaches the other."""
    import http.client
    import json
    import time
    import warnings

    mod = load_script()
    bundle = make_bundle(tmp_path)
    port = mod.free_port()
    proc = mod.start_server(bundle, tmp_path / "media", port, None, extra=["--workers", "2",
                                                                         "--reload-interval", "0.1"])

    def get(path: str) -> dict:
        c = http.client.HTTPConnection(mod.HOST, port, timeout=10)  # a new connection: any worker
        c.request("GET", path, headers={"Connection": "close"})
        return json.loads(c.getresponse().read())

    try:
        with Engine.open(bundle) as eng:
            picture = mod.add_pictures(eng, "sketch", 1)[0]
        status, out = mod.Client(port).post("/v1/domains/sketch/items", picture, {
            "Authorization": f"Bearer {mod.TOKEN}", "Content-Type": "image/png"})
        assert status == 200 and out["count"] == 13, out
        # Which worker takes a new connection is the kernel's choice: ask often, for a while.
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (len(seen) == 2 and set(seen.values()) == {2}):
            h = get("/healthz")
            seen[h["process"]] = h["generation"]
            time.sleep(0.01)
        assert seen and set(seen.values()) == {2}, seen  # every worker that answered has the add
        if len(seen) < 2:
            warnings.warn(f"only one of the 2 workers answered in 30 s ({len(seen)} seen)")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
