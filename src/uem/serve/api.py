"""The `/v1` routes: parse the request, hand the work to the Service, shape the JSON.

A picture comes as the multipart field `image` (the page, `curl -F image=@x.png`) or as the raw
request body (`curl --data-binary @x.png -H 'Content-Type: image/png'`); the other parameters as
form fields or in the query string. Every error is `{"error": "one line"}` (app.py maps them).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, Callable, Optional
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .config import ServeConfig
from .schemas import ERRORS, WRITE_ERRORS, AddOut, DomainsOut, InfoOut, QueryOut
from .service import Service, Upload, one_line

router = APIRouter(prefix="/v1")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_FIELD_BYTES = 64 * 1024  # a text field of a multipart form (domain, k, ...)

_IMAGE_BODY = {"type": "string", "format": "binary"}
QUERY_BODY = {
    "requestBody": {
        "required": True,
        "description": "The picture: multipart field `image` (parameters may also be form fields), "
                       "or the raw picture bytes as the body.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": _IMAGE_BODY, "domain": {"type": "string"}, "from": {"type": "string"},
                "k": {"type": "integer", "minimum": 1}, "no_reject": {"type": "boolean"}}}},
            "image/*": {"schema": _IMAGE_BODY},
            "application/octet-stream": {"schema": _IMAGE_BODY},
        },
    }
}
ADD_BODY = {
    "requestBody": {
        "required": True,
        "description": "Pictures: multipart fields `images` (repeat it for several; `image` works "
                       "too), or one picture's raw bytes as the body.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "images": {"type": "array", "items": _IMAGE_BODY}}}},
            "image/*": {"schema": _IMAGE_BODY},
            "application/octet-stream": {"schema": _IMAGE_BODY},
        },
    }
}


def service_of(request: Request) -> Service:
    return request.app.state.service


def image_url(request: Request, domain: str, item_id: str) -> str:
    root = request.scope.get("root_path", "")
    return f"{root}/v1/items/{quote(domain, safe='')}/{quote(item_id, safe='')}/image"


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise HTTPException(400, f"{name} must be true or false, got {one_line(str(value), 40)!r}")


def _k(value: Any, cfg: ServeConfig) -> int:
    try:
        k = int(str(value).strip())
    except ValueError:
        raise HTTPException(400, f"k must be an integer, got {one_line(str(value), 40)!r}") from None
    if not 1 <= k <= cfg.max_k:
        raise HTTPException(400, f"k must be between 1 and {cfg.max_k}, got {k}")
    return k


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def _refuse_urlencoded(request: Request) -> None:
    if request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raise HTTPException(400, "send the picture as multipart/form-data or as the raw request body")


def _retrieve(fut: asyncio.Future) -> None:
    """Done-callback of a job nobody awaits any more: its exception is read (so asyncio does not
    log "Future exception was never retrieved") and dropped; the client already has its 503."""
    if not fut.cancelled():
        fut.exception()


async def _run(pool, fn: Callable, timeout: float, what: str):
    """`fn()` on `pool`, bounded by `timeout` seconds (waiting in the queue included). Past it the
    answer is 503: a job still queued is cancelled (it never runs), one already running finishes
    in the background (threads cannot be stopped), and the message says which."""
    job = pool.submit(fn)
    fut = asyncio.wrap_future(job)
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except asyncio.TimeoutError:
        fut.add_done_callback(_retrieve)
        fate = "it was not started" if job.cancel() else "it is still running and may complete"
        raise HTTPException(503, f"{what} took longer than {timeout:g} s ({fate}); the server is busy, "
                            "try again", headers={"Retry-After": "5"}) from None


@router.post("/query", response_model=QueryOut, responses=ERRORS, openapi_extra=QUERY_BODY,
             summary="Find a picture's matches in a domain, or answer \"no match\"")
async def query(request: Request,
                domain: Optional[str] = Query(None, description="The domain to search (required; "
                                              "or a form field)."),
                source: Optional[str] = Query(None, alias="from", description="The picture's own "
                                              "domain (default: inferred)."),
                k: Optional[int] = Query(None, ge=1, description="Hits to return (default 10)."),
                no_reject: Optional[bool] = Query(None, description="Return hits even for \"no match\".")) -> dict:
    svc = service_of(request)
    cfg = svc.config
    params: dict[str, Any] = {"domain": domain, "from": source, "k": k, "no_reject": no_reject}
    _refuse_urlencoded(request)
    if _is_multipart(request):
        async with request.form(max_files=1, max_fields=8, max_part_size=_FIELD_BYTES) as form:
            for name in params:
                v = form.get(name)
                if isinstance(v, str):
                    params[name] = v
            up = form.get("image")
            if not isinstance(up, UploadFile):
                raise HTTPException(400, "no picture: send it as the multipart file field 'image'")
            data = await up.read()
    else:
        data = None
    target = (params["domain"] or "").strip()
    if not target:
        raise HTTPException(400, "domain is required (the domain to search)")
    src = (params["from"] or "").strip() or None
    kk = _k(params["k"], cfg) if params["k"] not in (None, "") else 10
    nr = _bool("no_reject", params["no_reject"]) if params["no_reject"] is not None else False
    svc.check(target, src)  # 404 before reading a raw body
    if data is None:
        data = await request.body()
    if not data:
        raise HTTPException(400, "no picture: send it as the multipart field 'image' or as the request body")
    ans = await _run(svc.queries, lambda: svc.query(data, target, kk, src, nr), cfg.query_timeout_s, "the query")
    r = ans.result
    return {"accepted": r.accepted, "reason": r.reason, "score": r.score, "source": r.source,
            "domain": r.domain, "k": kk, "generation": ans.generation, "count": ans.count,
            "took_ms": round(ans.seconds * 1000, 3),
            "hits": [{"id": h.id, "score": h.score, "rank_score": h.rank_score,
                      "image": image_url(request, target, h.id)} for h in r.hits]}


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        u = urlsplit(f"//{netloc}")
        return (u.hostname or "").lower(), u.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None


def cross_site(request: Request) -> str | None:
    """Why a request looks sent by another site's page (a form or a script a browser was made to
    send), or None. Browsers say so in Sec-Fetch-Site and Origin; clients that are not browsers
    send neither."""
    if request.headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "it was sent by another site's page"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    try:
        o = urlsplit(origin.strip())
    except ValueError:
        o = urlsplit("")
    scheme = o.scheme.lower()
    mine = _host_port(request.headers.get("host", ""), scheme)
    theirs = _host_port(o.netloc, scheme) if scheme in ("http", "https") and o.netloc else None
    if theirs is None or mine is None or theirs != mine:
        return f"its Origin ({one_line(origin, 80)}) is not this server"
    return None


def _authorise_write(request: Request, cfg: ServeConfig) -> None:
    if not cfg.allow_add:
        raise HTTPException(403, "adding pictures is turned off on this server (start it with --allow-add)")
    why = cross_site(request)
    if why is not None:
        raise HTTPException(403, f"refused: {why} (writes are accepted from this server's own pages "
                            "and from clients that are not browsers)")
    if cfg.token is not None:
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
            raise HTTPException(401, "this endpoint needs the server's token: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})


@router.post("/domains/{domain}/items", response_model=AddOut, responses=WRITE_ERRORS,
             openapi_extra=ADD_BODY, summary="Add pictures to a domain (atomic; needs --allow-add)")
async def add_items(request: Request, domain: str,
                    filename: Optional[str] = Query(None, description="The name of a raw-body picture.")) -> dict:
    svc = service_of(request)
    cfg = svc.config
    _authorise_write(request, cfg)   # before a byte of the body is read
    svc.check(domain)
    _refuse_urlencoded(request)
    uploads: list[Upload] = []
    if _is_multipart(request):
        async with request.form(max_files=cfg.max_files, max_fields=cfg.max_files + 8,
                                max_part_size=_FIELD_BYTES) as form:
            for key, v in form.multi_items():
                if key in ("images", "image") and isinstance(v, UploadFile):
                    uploads.append(Upload(v.filename or f"picture {len(uploads) + 1}", await v.read()))
    else:
        data = await request.body()
        if data:
            uploads.append(Upload(filename or "the uploaded picture", data))
    if not uploads:
        raise HTTPException(400, "no pictures: send them as multipart file fields 'images' or as the request body")
    for up in uploads:
        if not up.data:
            raise HTTPException(400, f"{one_line(up.name, 200)}: empty file (0 bytes)")
    out = await _run(svc.adds, lambda: svc.add(domain, uploads), cfg.add_timeout_s, "the add")
    for item in out["items"]:
        item["image"] = image_url(request, domain, item["id"])
    return out


@router.get("/domains", response_model=DomainsOut, summary="The bundle's domains and their item counts")
async def domains(request: Request) -> dict:
    svc = service_of(request)
    return svc.domains()


@router.get("/info", response_model=InfoOut, summary="The bundle's manifest summary (what `uemctl info` shows)")
async def info(request: Request) -> dict:
    return service_of(request).info()


@router.get("/items/{domain}/{item_id:path}/image", responses={404: ERRORS[404]},
            response_class=FileResponse, summary="The picture of an item of the bundle")
async def item_image(request: Request, domain: str, item_id: str):
    svc = service_of(request)
    svc.check(domain)
    path = await run_in_threadpool(svc.item_path, domain, item_id)
    if path is None:
        raise HTTPException(404, f"no picture for item {one_line(item_id, 200)!r} in {domain}")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
