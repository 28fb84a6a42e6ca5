"""What `uemctl serve` refuses: writes another site's page sends (CSRF), Host names that are not
this machine (DNS rebinding), empty or unusable tokens, pictures it could not serve back, server
paths in answers, and more request bodies in memory than its slots."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'uem[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from uem.cli.app import main  # noqa: E402
from uem.engine.errors import BundleError  # noqa: E402
from uem.serve import ServeConfig  # noqa: E402
from uem.serve import server as serve_server  # noqa: E402
from uem.serve.app import create_app  # noqa: E402
from uem.serve.middleware import LimitsMiddleware  # noqa: E402
from uem.testing.bundles import draw, make_bundle, png_bytes  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serve_safety"))


def local(app, host: str = "127.0.0.1") -> TestClient:
    return TestClient(app, base_url=f"http://{host}")


def sketch(seed: int = 3) -> bytes:
    return png_bytes(draw("green", "sketch", np.random.default_rng(seed)))


def error_of(r, status: int, needle: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and needle in body["error"] and "\n" not in body["error"], body
    return body["error"]


def add(c, data: bytes, name: str = "a.png", **headers):
    return c.post("/v1/domains/sketch/items", headers=headers, files=[("images", (name, data, "image/png"))])


# -- cross-site writes and DNS rebinding -------------------------------------------------------
def test_writes_from_another_sites_page_are_refused(fresh, tmp_path):
    cfg = ServeConfig(allow_add=True, media=str(tmp_path / "media"), reload_interval_s=0)  # no token
    with local(create_app(fresh, cfg)) as c:
        error_of(add(c, sketch(), **{"Sec-Fetch-Site": "cross-site"}), 403, "another site's page")
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8443",
                       "http://localhost", "file://", "127.0.0.1", "http://[::1"):
            error_of(add(c, sketch(), Origin=origin), 403, "is not this server")
        assert not (tmp_path / "media").exists()  # refused before a byte was stored
        assert c.get("/v1/domains").json()["domains"][1]["count"] == 12
        # the server's own page (same origin), and clients that are not browsers (no Origin)
        assert add(c, sketch(1), Origin="http://127.0.0.1", **{"Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert add(c, sketch(2), Origin="http://127.0.0.1:80").status_code == 200
        assert add(c, sketch(4)).status_code == 200
        assert c.get("/v1/domains").json()["domains"][1]["count"] == 15


def test_a_loopback_server_answers_only_to_this_machines_names(base):
    app = create_app(base, ServeConfig(port=8000, reload_interval_s=0))
    with local(app) as c:
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:8000"):
            r = c.get("/v1/domains", headers={"Host": host})
            assert r.status_code == 400 and "Invalid host header" in r.text, host
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"):
            assert c.get("/v1/domains", headers={"Host": host}).status_code == 200, host
    with local(create_app(base, ServeConfig(host="::1", reload_interval_s=0)), "[::1]") as c:
        assert c.get("/healthz").status_code == 200
    # bound to every interface, the names it is reached by are not known: no Host check
    with local(create_app(base, ServeConfig(host="0.0.0.0", reload_interval_s=0)), "uem.example") as c:
        assert c.get("/healthz").status_code == 200


# -- tokens ------------------------------------------------------------------------------------
def test_tokens_must_be_printable_ascii():
    for bad in ("", " ", "tök", "a\tb", "x\x7f", "\u00a0t", "a b"):
        with pytest.raises(ValueError, match="printable ASCII"):
            ServeConfig(token=bad)
    assert ServeConfig(token="A-z0~9!").token == "A-z0~9!"


def _one_line(capsys, argv, needle):
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("uemctl: error:") and needle in lines[0], lines


@pytest.fixture
def served(monkeypatch):
    """`uemctl serve` up to the point it would listen: the config it would run with."""
    got = []
    monkeypatch.setattr(serve_server, "run", lambda bundle, config: got.append(config))
    monkeypatch.delenv("UEM_TOKEN", raising=False)
    return got


def test_an_empty_token_is_refused_not_ignored(base, served, capsys, monkeypatch):
    _one_line(capsys, ["serve", base, "--allow-add", "--token", ""], "token")
    monkeypatch.setenv("UEM_TOKEN", "")
    _one_line(capsys, ["serve", base, "--allow-add"], "UEM_TOKEN")
    assert served == []


def test_the_token_and_read_timeout_reach_the_server(base, served, monkeypatch):
    monkeypatch.setenv("UEM_TOKEN", "from-the-env")
    assert main(["serve", str(base), "--allow-add", "--read-timeout", "7.5"]) == 0
    assert served[-1].token == "from-the-env" and served[-1].read_timeout_s == 7.5
    assert main(["serve", str(base), "--allow-add", "--token", "given"]) == 0
    assert served[-1].token == "given" and served[-1].allow_add
    monkeypatch.delenv("UEM_TOKEN")
    assert main(["serve", str(base)]) == 0 and served[-1].token is None


def test_the_token_from_the_environment_guards_a_real_server(base, tmp_path):
    """End to end: `python -m uem serve` with $UEM_TOKEN set answers 401 without the header."""
    import http.client
    import os
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "uem", "serve", str(base), "--port", str(port),
                             "--allow-add", "--reload-interval", "0", "--media", str(tmp_path / "m")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "UEM_TOKEN": "env-token"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("POST", "/v1/domains/sketch/items", body=sketch(), headers={"Content-Type": "image/png"})
                r = c.getresponse()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert r.status == 401 and "token" in json.loads(r.read())["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- what an add refuses, what answers leave out -------------------------------------------------
@pytest.mark.parametrize("fmt", ["ICO", "TGA"])
def test_a_picture_whose_file_could_not_be_served_is_refused(fresh, tmp_path, fmt):
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (30, 160, 40)).save(buf, format=fmt)
    cfg = ServeConfig(allow_add=True, media=str(tmp_path / "media"), reload_interval_s=0)
    with local(create_app(fresh, cfg)) as c:
        error_of(add(c, buf.getvalue(), f"x.{fmt.lower()}"), 400, f"x.{fmt.lower()}: {fmt} pictures cannot be added")
        assert c.get("/v1/domains").json()["domains"][1]["count"] == 12
    assert not (tmp_path / "media").exists()


def test_info_and_errors_do_not_show_server_paths(base, monkeypatch):
    app = create_app(base, ServeConfig(reload_interval_s=0))
    svc = app.state.service
    real = svc.engine.info()
    secret = "/srv/private"
    leaky = {**real, "path": f"{secret}/model.uem", "backend": {"kind": "milvus", "uri": f"http://db{secret}"},
             "model": {**real["model"], "extra": {"source_run": f"{secret}/runs/7", "parity": {"mean_cos": 0.99},
                                                  "train_config": {"data": f"{secret}/data"}}}}
    monkeypatch.setattr(svc.engine, "info", lambda: leaky)
    with local(app) as c:
        info = c.get("/v1/info").json()
        assert secret not in json.dumps(info), info
        assert info["bundle"] == "model.uem" and info["backend"] == {"kind": "milvus"}
        assert info["model"]["parity"] == {"mean_cos": 0.99} and info["model"]["embed_dim"] == 8
        assert info["domains"] == {"photo": 12, "sketch": 12} and info["generation"] == 1

        def broken():
            raise BundleError(f"{base}/g1/domains/sketch/items.jsonl: checksum mismatch")

        monkeypatch.setattr(svc, "domains", broken)
        msg = error_of(c.get("/v1/domains"), 503, "the bundle is unavailable: model.uem/g1/domains")
        assert str(base.parent) not in msg


# -- memory: request bodies held at once ---------------------------------------------------------
def test_request_bodies_held_at_once_are_bounded_per_process():
    assert ServeConfig(query_threads=2).body_slots == 8 and ServeConfig(max_bodies=3).body_slots == 3
    one = serve_server._uvicorn_options(ServeConfig(workers=1))["limit_concurrency"]
    assert one == serve_server._uvicorn_options(ServeConfig(workers=8))["limit_concurrency"]  # per process

    release = asyncio.Event()
    answers: list[tuple[int, dict]] = []

    async def app(scope, receive, send):
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def request(mw):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"x" * 10, "more_body": False}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body":
                answers.append((sent[0]["status"], json.loads(message["body"])))

        return mw({"type": "http", "method": "POST", "headers": []}, receive, send)

    async def scenario():
        mw = LimitsMiddleware(app, max_bytes=1000, read_timeout_s=0.2, max_bodies=2)
        held = [asyncio.create_task(request(mw)) for _ in range(2)]
        await asyncio.sleep(0.05)
        await request(mw)  # a third waits 0.2 s for a slot, then 503
        assert answers == [(503, {"error": "the server is busy receiving 2 other uploads; try again"})]
        release.set()
        await asyncio.gather(*held)
        await request(mw)  # the slots are free again
        assert [s for s, _ in answers] == [503, 200, 200, 200]

    asyncio.run(asyncio.wait_for(scenario(), 10))
