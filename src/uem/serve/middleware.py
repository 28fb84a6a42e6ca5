"""Pure ASGI middleware: request body limits and read timeout, and per-request metrics.

Why pure ASGI (not BaseHTTPMiddleware): the body limit must act while the body streams in, before
a multipart parser spools 2 GB to a temporary file, and it must see every byte the route reads.
"""

from __future__ import annotations

import asyncio
import json
import time

from .metrics import Metrics

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


async def _send_error(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _size(n: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


class LimitsMiddleware:
    """413 for a body over `max_bytes` (by Content-Length at once, else while it streams in);
    408 when receiving the body takes longer than `read_timeout_s`. At most `max_bodies` requests
    with a body are handled at once (the rest wait for a slot, up to `read_timeout_s`, then 503),
    so the bodies a process holds in memory are bounded by max_bodies x max_bytes, whatever the
    number of connections. Errors are `{"error": ...}`."""

    def __init__(self, app, max_bytes: int, read_timeout_s: float, max_bodies: int = 64) -> None:
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s
        self.max_bodies = max_bodies
        self._slots: asyncio.Semaphore | None = None
        self._loop = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # one per event loop (tests make several)
            self._slots, self._loop = asyncio.Semaphore(self.max_bodies), loop
        return self._slots

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        slots = self._semaphore()
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.read_timeout_s)
        except asyncio.TimeoutError:
            await _send_error(send, 503, f"the server is busy receiving {self.max_bodies} other uploads; "
                              "try again", [(b"retry-after", b"5"), (b"connection", b"close")])
            return
        try:
            await self._limited(scope, receive, send)
        finally:
            slots.release()

    async def _limited(self, scope, receive, send) -> None:
        too_large = f"upload too large: the limit is {_size(self.max_bytes)} per request"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad Content-Length header")
                    return
                if declared > self.max_bytes:
                    await _send_error(send, 413, too_large, [(b"connection", b"close")])
                    return
        received = 0
        deadline = time.monotonic() + self.read_timeout_s
        started = False

        async def limited_receive():
            nonlocal received, deadline
            if deadline == float("inf"):
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
                if not message.get("more_body", False):
                    deadline = float("inf")  # the body is in; later receives wait for a disconnect
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_error(send, 413, too_large, [(b"connection", b"close")])
        except BodyTimeout:
            if not started:
                await _send_error(send, 408, f"request body not received within {self.read_timeout_s:g} s",
                                  [(b"connection", b"close")])


class MetricsMiddleware:
    """Counts every HTTP request by method, route template and status, and times it."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("static" if scope["path"].startswith("/static/")
                                                        else "unmatched")
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - t0)


class SecurityHeadersMiddleware:
    """No sniffing, no framing, and a page that may load only what this server serves (no CDN)."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
         b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    ]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
