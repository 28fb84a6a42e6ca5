"""`POST /v1/domains/{domain}/items`: off unless allowed, the token, the content-addressed media
folder, atomic adds, reloads of other processes' commits; and `uemctl serve` refusing to start."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'uem[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from uem.cli.app import main  # noqa: E402
from uem.engine import Engine  # noqa: E402
from uem.serve import ServeConfig  # noqa: E402
from uem.serve.app import create_app  # noqa: E402
from uem.testing.bundles import make_bundle  # noqa: E402
from serve_helpers import green_sketches, local  # noqa: E402

TOKEN = "s3cret-token"




@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serve_add"))




def writer(bundle: Path, tmp_path: Path, **kw) -> TestClient:
    cfg = ServeConfig(allow_add=True, token=TOKEN, media=str(tmp_path / "media"), reload_interval_s=0, **kw)
    return local(create_app(bundle, cfg))


def post(c, domain: str, pictures: list[tuple[str, bytes]], token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return c.post(f"/v1/domains/{domain}/items", headers=headers,
                  files=[("images", (name, data, "image/png")) for name, data in pictures])


def error_of(r, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and needle in body["error"] and "\n" not in body["error"], body


def test_writes_are_off_unless_allowed(base):
    with local(create_app(base, ServeConfig(reload_interval_s=0, token=TOKEN))) as c:
        error_of(post(c, "sketch", [("a.png", green_sketches(1)[0])]), 403, "--allow-add")
    with Engine.open(base) as eng:
        assert eng.count("sketch") == 12


def test_token_is_required_and_checked_before_the_body(fresh, tmp_path):
    pics = [("a.png", green_sketches(1)[0])]
    with writer(fresh, tmp_path) as c:
        for token in (None, "wrong", TOKEN + "x"):
            r = post(c, "sketch", pics, token=token)
            error_of(r, 401, "Bearer")
            assert r.headers["www-authenticate"] == "Bearer"
        r = c.post("/v1/domains/sketch/items", headers={"Authorization": f"Basic {TOKEN}"}, files=[
            ("images", pics[0])])
        error_of(r, 401, "token")
        assert c.get("/v1/domains").json()["domains"][1]["count"] == 12
        assert not (tmp_path / "media").exists()  # nothing was read or stored
        assert post(c, "sketch", pics).status_code == 200


def test_add_stores_content_addressed_pictures_then_commits(fresh, tmp_path, base):
    pics = green_sketches(3)
    with writer(fresh, tmp_path) as c:
        r = post(c, "sketch", [(f"g{i}.png", p) for i, p in enumerate(pics)])
        assert r.status_code == 200, r.text
        out = r.json()
        digests = [hashlib.sha256(p).hexdigest() for p in pics]
        assert out["added"] == 3 and out["present"] == 0 and out["count"] == 15 and out["generation"] == 2
        assert [i["id"] for i in out["items"]] == digests and all(i["new"] for i in out["items"])
        for d, p in zip(digests, pics):
            f = tmp_path / "media" / d[:2] / f"{d}.png"
            assert f.read_bytes() == p
            got = c.get(f"/v1/items/sketch/{d}/image")
            assert got.status_code == 200 and got.content == p
        # the bundle records the media files, and a fresh engine (another process) sees them
        with Engine.open(fresh) as eng:
            rows = {it["id"]: it for it in eng.items("sketch")}
            assert eng.count("sketch") == 15
        assert rows[digests[0]]["path"] == str((tmp_path / "media" / digests[0][:2] / f"{digests[0]}.png").resolve())
        assert rows[digests[0]]["filename"] == "g0.png"
        # what was added is found: a green sketch query now hits them first
        q = c.post("/v1/query", files={"image": ("q.png", pics[0])},
                   data={"domain": "sketch", "k": "3", "no_reject": "true", "from": "sketch"}).json()
        assert q["hits"][0]["id"] == digests[0] and q["count"] == 15 and q["generation"] == 2
        # the same bytes again (even twice in one request): nothing new
        again = post(c, "sketch", [("again.png", pics[1]), ("twice.png", pics[1])]).json()
        assert (again["added"], again["present"], again["count"]) == (0, 1, 15)
        assert len(list((tmp_path / "media").rglob("*.png"))) == 3
    with Engine.open(base) as eng:
        assert eng.count("sketch") == 12  # the module's bundle is untouched (fresh is a copy)


def test_raw_body_add_with_a_filename(fresh, tmp_path):
    p = green_sketches(1, seed=11)[0]
    with writer(fresh, tmp_path) as c:
        r = c.post("/v1/domains/photo/items?filename=raw.png", content=p,
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"})
        assert r.status_code == 200 and r.json()["items"][0]["filename"] == "raw.png"
        assert r.json()["count"] == 13


def test_one_bad_picture_adds_nothing(fresh, tmp_path):
    good = green_sketches(2)
    with writer(fresh, tmp_path) as c:
        r = post(c, "sketch", [("ok.png", good[0]), ("broken.png", b"\x89PNG not really"), ("ok2.png", good[1])])
        error_of(r, 400, "broken.png")
        error_of(post(c, "sketch", [("empty.png", b"")]), 400, "empty.png: empty file")
        error_of(post(c, "drawing", [("ok.png", good[0])]), 404, "unknown domain 'drawing'")
        error_of(c.post("/v1/domains/sketch/items", headers={"Authorization": f"Bearer {TOKEN}"},
                        files=[("other", ("x.png", good[0]))]), 400, "no pictures")
        assert c.get("/v1/domains").json()["domains"][1]["count"] == 12
        assert not list((tmp_path / "media").rglob("*.png"))  # nothing stored before every picture decoded


def test_too_many_files_and_too_large(fresh, tmp_path):
    pics = green_sketches(3)
    with writer(fresh, tmp_path, max_files=2) as c:
        error_of(post(c, "sketch", [(f"{i}.png", p) for i, p in enumerate(pics)]), 400, "Too many files")
    with writer(fresh, tmp_path, max_upload_bytes=sum(map(len, pics[:2])) + 2000) as c:
        big = [(f"{i}.png", p) for i, p in enumerate(pics[:2])] + [("big.png", b"x" * 5000)]
        error_of(post(c, "sketch", big), 413, "upload too large")
        assert post(c, "sketch", [("0.png", pics[0])]).status_code == 200


def test_an_add_queued_past_its_timeout_never_runs(fresh, tmp_path):
    with writer(fresh, tmp_path, add_timeout_s=0.3) as c:
        release = threading.Event()
        c.app.state.service.adds.submit(release.wait, 10)  # an earlier add holds the add thread
        try:
            error_of(post(c, "sketch", [("late.png", green_sketches(1)[0])]), 503, "(it was not started)")
        finally:
            release.set()
        c.app.state.service.adds.submit(lambda: None).result(timeout=10)  # the queue is drained
        assert c.get("/v1/domains").json()["domains"][1]["count"] == 12
        assert not (tmp_path / "media").exists()


def test_reload_picks_up_another_processs_commit(fresh, tmp_path):
    cfg = ServeConfig(reload_interval_s=0.05)
    with local(create_app(fresh, cfg)) as c:
        assert c.get("/healthz").json()["generation"] == 1
        with Engine.open(fresh) as other:  # e.g. `uemctl index add` while the server runs
            (tmp_path / "new.png").write_bytes(green_sketches(1)[0])
            assert other.add("sketch", [tmp_path / "new.png"]) == 1
        deadline = time.monotonic() + 10
        while c.get("/healthz").json()["generation"] != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/v1/domains").json() == {
            "generation": 2, "domains": [{"name": "photo", "count": 12}, {"name": "sketch", "count": 13}]}


# -- `uemctl serve` refuses to start -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(capsys, argv, needle):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("uemctl: error:") and needle in lines[0], err


def test_serve_refuses_a_tampered_or_missing_bundle(fresh, tmp_path, capsys):
    port = _free_port()
    _one_line(capsys, ["serve", tmp_path / "nothing.uem", "--port", port], "nothing.uem")
    items = next(fresh.glob("g*/domains/sketch/items.jsonl"))
    items.write_bytes(items.read_bytes().replace(b"red", b"rad", 1))
    _one_line(capsys, ["serve", fresh, "--port", port], "checksum")


def test_serve_refuses_a_taken_port_and_bad_options(base, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        _one_line(capsys, ["serve", base, "--port", s.getsockname()[1]], "cannot listen on 127.0.0.1:")
    _one_line(capsys, ["serve", base, "--port", _free_port(), "--token", "two words"], "token")


def test_serve_without_the_extra_says_what_to_install(base, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    _one_line(capsys, ["serve", base], "pip install 'uem[serve]'")


def test_runtime_and_cli_do_not_import_the_server():
    import subprocess
    import sys

    code = ("import json, sys, uem.engine; a = [m for m in ('torch', 'fastapi', 'uvicorn', 'starlette', "
            "'pydantic', 'uem.serve') if m in sys.modules]; import uem.cli.app; "
            "print(json.dumps([a, [m for m in ('fastapi', 'uvicorn', 'starlette', 'uem.serve') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[], []]


def test_serve_package_imports_only_the_engine():
    import ast

    pkg = Path(create_app.__code__.co_filename).parent
    for f in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = (node.module or "")
                if node.level == 2:
                    assert target == "" or target == "engine" or target.startswith("engine."), (f, target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    assert not n.startswith("uem") or n.startswith(("uem.engine", "uem.serve")), (f, n)
