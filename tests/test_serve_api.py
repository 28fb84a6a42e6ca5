"""`uemctl serve`'s JSON API through FastAPI's TestClient on a tiny bundle: queries, reads, errors,
limits, timeouts, the OpenAPI document, metrics, the page's files."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'uem[serve]')")

from uem.engine import Engine  # noqa: E402
from uem.serve import ServeConfig  # noqa: E402
from uem.serve.app import STATIC, create_app  # noqa: E402
from uem.serve.middleware import LimitsMiddleware  # noqa: E402
from uem.testing.bundles import make_aligned_bundle, make_bundle  # noqa: E402
from serve_helpers import local  # noqa: E402




@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serve"))


def pic(base: Path, rel: str) -> bytes:
    return (base.parent / "data" / rel).read_bytes()


@pytest.fixture
def client(base):
    with local(create_app(base, ServeConfig(reload_interval_s=0))) as c:
        yield c


def one_line_error(r, status: int, needle: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and needle in body["error"], body
    return body["error"]


def ask(c, data: bytes, **fields):
    return c.post("/v1/query", files={"image": ("q.png", data, "image/png")},
                  data={k: str(v) for k, v in fields.items()})


# -- queries -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rel,no_reject", [("photo/red/0.png", False), ("photo/green/1.png", True),
                                           ("sketch/blue/2.png", False)])
def test_query_json_equals_engine_query(base, client, rel, no_reject):
    data = pic(base, rel)
    with Engine.open(base) as eng:
        want = eng.query(data, "sketch", k=5, no_reject=no_reject)
    r = ask(client, data, domain="sketch", k=5, no_reject=no_reject)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["accepted"], got["reason"], got["source"], got["domain"]) == (
        want.accepted, want.reason, want.source, "sketch")
    assert got["score"] == pytest.approx(want.score, rel=1e-6)
    assert [h["id"] for h in got["hits"]] == [h.id for h in want.hits]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in want.hits], abs=1e-6)
    assert got["k"] == 5 and got["generation"] == 1 and got["count"] == 12
    assert len(got["hits"]) == (5 if (want.accepted or no_reject) else 0)


def test_query_rank_scores_equal_engine_on_an_aligned_bundle(tmp_path):
    bundle = make_aligned_bundle(tmp_path)
    data = (tmp_path / "data" / "photo" / "red" / "3.png").read_bytes()
    with Engine.open(bundle) as eng:
        want = eng.query(data, "sketch", k=4, source="photo")
    with local(create_app(bundle, ServeConfig(reload_interval_s=0))) as c:
        got = ask(c, data, domain="sketch", k=4, **{"from": "photo"}).json()
    assert want.hits and all(h.rank_score is not None for h in want.hits)
    assert [h["id"] for h in got["hits"]] == [h.id for h in want.hits]
    assert [h["rank_score"] for h in got["hits"]] == pytest.approx([h.rank_score for h in want.hits], abs=1e-6)


def test_missing_concept_is_no_match_with_the_engines_reason(base, client):
    got = ask(client, pic(base, "photo/green/0.png"), domain="sketch").json()
    assert got["accepted"] is False and got["hits"] == []
    assert "nearest concept exists only in photo" in got["reason"]


def test_raw_body_with_query_string_parameters(base, client):
    data = pic(base, "photo/red/2.png")
    r = client.post("/v1/query?domain=sketch&k=3&from=photo", content=data,
                    headers={"Content-Type": "image/png"})
    got = r.json()
    assert r.status_code == 200 and got["accepted"] and got["source"] == "photo" and len(got["hits"]) == 3
    assert all(h["id"].startswith("sketch/red/") for h in got["hits"])


def test_hit_image_urls_serve_the_items_own_pictures(base, client):
    got = ask(client, pic(base, "photo/red/0.png"), domain="sketch", k=3).json()
    for h in got["hits"]:
        assert h["image"] == f"/v1/items/sketch/{quote(h['id'], safe='')}/image"
        r = client.get(h["image"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == (base.parent / "data" / h["id"]).read_bytes()


@pytest.mark.parametrize("bad_id", ["../../../etc/passwd", "sketch/red/../../../../etc/hostname",
                                    "sketch/red/../red/0.png", "/etc/passwd", "sketch/red/99.png",
                                    "photo/red/0.png", "", "{data}/sketch/red/0.png"])
def test_item_image_only_serves_recorded_items(base, client, bad_id):
    """Each id reaches the handler (its own message, not the router's 404), every character of it
    percent-encoded so no client or server resolves the dots first; only recorded ids are served."""
    bad_id = bad_id.format(data=base.parent / "data")
    raw = "".join(f"%{b:02x}" for b in bad_id.encode())  # "../" -> "%2e%2e%2f"
    for encoded in (raw, quote(bad_id, safe="")):
        one_line_error(client.get(f"/v1/items/sketch/{encoded}/image"), 404,
                       f"no picture for item {bad_id!r} in sketch")
    assert client.get("/v1/items/sketch/%73ketch%2fred%2f0.png/image").status_code == 200  # decoded ids work


def test_item_image_unknown_domain_and_missing_file(fresh, tmp_path):
    with local(create_app(fresh, ServeConfig(reload_interval_s=0))) as c:
        one_line_error(c.get("/v1/items/drawing/x/image"), 404, "unknown domain 'drawing'")
        with Engine.open(fresh) as eng:
            item = eng.items("sketch")[0]
        Path(item["path"]).rename(tmp_path / "moved.png")
        try:
            one_line_error(c.get(f"/v1/items/sketch/{quote(item['id'], safe='')}/image"), 404, "no picture")
        finally:
            (tmp_path / "moved.png").rename(item["path"])


# -- bad input ---------------------------------------------------------------------------------
def test_bad_queries_are_one_line_errors(base, client):
    red = pic(base, "photo/red/0.png")
    one_line_error(ask(client, red), 400, "domain is required")
    one_line_error(ask(client, red, domain="drawing"), 404, "unknown domain 'drawing'")
    one_line_error(ask(client, red, domain="sketch", **{"from": "drawing"}), 404, "unknown domain 'drawing'")
    one_line_error(ask(client, b"this is not a picture", domain="sketch"), 400,
                   "the uploaded picture: not an image")
    one_line_error(ask(client, red[:200], domain="sketch"), 400, "the uploaded picture")
    for k in ("0", "-3", "abc", "101"):
        one_line_error(ask(client, red, domain="sketch", k=k), 400, "k must be")
    one_line_error(ask(client, red, domain="sketch", no_reject="maybe"), 400, "no_reject must be")
    one_line_error(client.post("/v1/query?domain=sketch&k=zero", content=red), 400, "k")
    one_line_error(client.post("/v1/query?domain=sketch", content=b""), 400, "no picture")
    one_line_error(client.post("/v1/query", data={"domain": "sketch"}), 400, "multipart/form-data")
    one_line_error(client.post("/v1/query", files={"other": ("a.png", red)}, data={"domain": "sketch"}),
                   400, "no picture")
    one_line_error(client.get("/v1/query"), 405, "Method Not Allowed")
    one_line_error(client.get("/v2/anything"), 404, "not found")


def test_decompression_bomb_is_refused(client):
    buf = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buf, format="PNG")  # 30 MP in a few KB
    assert len(buf.getvalue()) < 100_000
    one_line_error(ask(client, buf.getvalue(), domain="sketch"), 400, "too large")


def test_upload_limit(base):
    red = pic(base, "photo/red/0.png")
    cfg = ServeConfig(max_upload_bytes=len(red) - 1, reload_interval_s=0)
    with local(create_app(base, cfg)) as c:
        one_line_error(ask(c, red, domain="sketch"), 413, "upload too large")
        one_line_error(c.post("/v1/query?domain=sketch", content=red), 413, "upload too large")
        # no Content-Length (chunked): counted while it streams in
        chunks = (red[i:i + 256] for i in range(0, len(red), 256))
        one_line_error(c.post("/v1/query?domain=sketch", content=chunks), 413, "upload too large")
    with local(create_app(base, ServeConfig(max_upload_bytes=len(red) + 1000, reload_interval_s=0))) as c:
        assert ask(c, red, domain="sketch").status_code == 200


def test_query_waiting_longer_than_the_timeout_answers_503(base):
    cfg = ServeConfig(query_threads=1, query_timeout_s=0.3, reload_interval_s=0)
    with local(create_app(base, cfg)) as c:
        release = threading.Event()
        c.app.state.service.queries.submit(release.wait, 10)  # the only query thread is busy
        try:
            r = ask(c, pic(base, "photo/red/0.png"), domain="sketch")
            one_line_error(r, 503, "took longer than 0.3 s (it was not started)")
            assert r.headers["retry-after"] == "5"
        finally:
            release.set()
        assert ask(c, pic(base, "photo/red/0.png"), domain="sketch").status_code == 200


def test_a_body_that_does_not_arrive_in_time_answers_408():
    sent = []

    async def app(scope, receive, send):
        await receive()
        raise AssertionError("the body never arrives")

    async def receive():
        await asyncio.sleep(30)

    async def send(message):
        sent.append(message)

    mw = LimitsMiddleware(app, max_bytes=1000, read_timeout_s=0.05)
    asyncio.run(asyncio.wait_for(mw({"type": "http", "method": "POST", "headers": []}, receive, send), 5))
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"].startswith("request body not received within")


# -- reads ---------------------------------------------------------------------------------------
def test_domains_info_health(client):
    assert client.get("/v1/domains").json() == {
        "generation": 1, "domains": [{"name": "photo", "count": 12}, {"name": "sketch", "count": 12}]}
    info = client.get("/v1/info").json()
    assert info["bundle"] == "model.uem" and info["domains"] == {"photo": 12, "sketch": 12}
    assert "path" not in info and info["model"]["embed_dim"] == 8 and info["generation"] == 1
    assert client.get("/healthz").json() == {"status": "ok", "generation": 1, "domains": 2,
                                             "process": os.getpid()}


def test_openapi_document(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {"/v1/query", "/v1/domains/{domain}/items", "/v1/domains", "/v1/info",
                          "/v1/items/{domain}/{item_id}/image", "/healthz"}
    q = paths["/v1/query"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(q["requestBody"]["content"])
    assert {p["name"] for p in q["parameters"]} == {"domain", "from", "k", "no_reject"}
    assert {"200", "400", "404", "413", "503"} <= set(q["responses"])
    assert {"401", "403"} <= set(paths["/v1/domains/{domain}/items"]["post"]["responses"])
    hit = doc["components"]["schemas"]["HitOut"]["properties"]
    assert {"id", "score", "rank_score", "image"} <= set(hit)
    assert client.get("/docs").status_code == 404  # its viewer would load scripts from a CDN


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_requests_latency_and_rejections(base, client):
    for rel in ("photo/red/0.png", "photo/green/0.png", "photo/green/1.png"):
        assert ask(client, pic(base, rel), domain="sketch").status_code == 200
    assert ask(client, b"junk", domain="sketch").status_code == 400
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = _samples(r.text)
    assert s['uem_http_requests_total{method="POST",route="/v1/query",status="200"}'] == 3
    assert s['uem_http_requests_total{method="POST",route="/v1/query",status="400"}'] == 1
    assert s['uem_http_request_duration_seconds_count{route="/v1/query"}'] == 4
    assert s['uem_http_request_duration_seconds_bucket{route="/v1/query",le="+Inf"}'] == 4
    assert s['uem_query_rejections_total{domain="sketch"}'] == 2
    assert s['uem_queries_total{domain="sketch",outcome="match"}'] == 1
    assert s['uem_domain_items{domain="sketch"}'] == 12 and s["uem_bundle_generation"] == 1
    buckets = [v for k, v in s.items() if k.startswith('uem_http_request_duration_seconds_bucket{route="/v1/query"')]
    assert buckets == sorted(buckets)  # cumulative
    for line in r.text.splitlines():  # every sample line is NAME{labels} VALUE
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^{}]*\})? [-+0-9.eInf]+', line), line


# -- the page's files --------------------------------------------------------------------------
def test_page_and_its_files_are_served_offline(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for needle in ('id="pad"', 'id="file"', 'id="domain"', 'id="banner"', 'id="grid"', 'name="viewport"'):
        assert needle in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        f = client.get(f"/static/{name}")
        assert f.status_code == 200 and kind in f.headers["content-type"]
    for f in STATIC.iterdir():  # nothing fetched from elsewhere, nothing about how it was made
        text = f.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//|@import|url\(\s*['\"]?(https?:)?//|fetch\(\"http", text), f
        assert not re.search(r"\b(issue|session)s?\b", text, re.I), f
    for escape in ("/static/..%2fconfig.py", "/static/%2e%2e/app.py", "/static/..%2F..%2Fengine%2Fengine.py"):
        one_line_error(client.get(escape), 404, "not found")


def test_the_page_works_under_a_path_prefix(base):
    """Behind a proxy that serves it at /uem/: every URL the page uses is relative to it."""
    from urllib.parse import urljoin

    from starlette.applications import Starlette
    from starlette.routing import Mount

    inner = create_app(base, ServeConfig(reload_interval_s=0))
    try:
        with local(Starlette(routes=[Mount("/uem", app=inner)])) as c:
            page, js = c.get("/uem/").text, c.get("/uem/static/app.js").text
            refs = re.findall(r'(?:href|src)="([^"]+)"', page) + re.findall(r'fetch\("([^"]+)"', js)
            assert len(refs) >= 5 and not [r for r in refs if r.startswith("/")], refs
            item = quote("sketch/red/0.png", safe="")
            assert "`v1/items/${encodeURIComponent(domain)}/${encodeURIComponent(hit.id)}/image`" in js
            for ref in refs + [f"v1/items/sketch/{item}/image"]:
                url = urljoin("http://127.0.0.1/uem/", ref)
                r = c.post(url, data={"domain": "sketch"}) if ref.endswith("v1/query") else c.get(url)
                assert r.status_code == (400 if ref.endswith("v1/query") else 200), (ref, r.text[:200])
    finally:
        inner.state.service.close()


def test_config_validates_itself():
    for bad in ({"port": 70000}, {"workers": 0}, {"max_upload_bytes": 0}, {"token": ""},
                {"token": "a b"}, {"query_timeout_s": 0}, {"max_k": True}, {"reload_interval_s": -1}):
        with pytest.raises(ValueError):
            ServeConfig(**bad)
    cfg = ServeConfig(port=9000, token="t", allow_add=True, media="/tmp/m")
    assert ServeConfig.from_json(cfg.to_json()) == cfg
