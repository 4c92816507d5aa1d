"""ASGI middlewares that keep one request from hurting the server: body size, time, content type.

They are plain ASGI (no ``BaseHTTPMiddleware``): a refusal is sent before the body is read,
and nothing here buffers more than the limit. LitServe's own ``MaxSizeMiddleware`` counts the
body only while the route reads it (so a 300 MB upload is read up to the limit, and its
``"64MB"`` strings are compared as strings), and LitServe has no request timeout on the HTTP
side (its ``timeout`` drops requests that waited too long in the worker's queue, not ones a
dead worker took): hence these.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lightning_deploy.errors import ConfigurationError

__all__ = ["BodyLimit", "JsonByDefault", "RequestTimeout", "api_key_from", "parse_size"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str | int, option: str = "--max-payload-size") -> int:
    """Bytes in ``text``: ``64MB`` (10**6), ``64MiB`` (2**20), ``1GB``, ``500kB`` or a plain number of bytes."""
    if isinstance(text, int):
        size = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
        unit = match and _UNITS.get(match.group(2).lower())
        if not unit:
            raise ConfigurationError(
                f"{option} {text!r}: not a size. HINT: a number of bytes with a unit, like 64MB, 512KiB or 1GB."
            )
        size = int(float(match.group(1)) * unit)
    if size < 1:
        raise ConfigurationError(f"{option} {text!r}: give at least 1 byte.")
    return size


async def _answer(send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413 to a body over ``max_bytes``: by Content-Length before a byte is read, or as a chunked one streams.

    A chunked body is read here up to the limit and handed on from memory; past the limit the
    rest is never read, and the connection is closed after the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, or pass the request on (a chunked one from the chunks read here)."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                return await self._refuse(send, declared.decode(errors="replace"))
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:  # read the chunks up to the limit, then replay them to the app
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send, f"more than {size}")
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: str) -> None:
        detail = (
            f"the request body ({size} bytes) is over the server's limit of {self.max_bytes} bytes."
            " HINT: send less per request, or start the server with a larger --max-payload-size."
        )
        await _answer(send, 413, detail, ((b"connection", b"close"),))


class RequestTimeout:
    """Answer 504 to a request not answered within ``seconds`` (a slow model, a queue, a worker that died with it)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; past the timeout, cancel it and answer 504 unless its answer has begun."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        # A timer that cancels this task, as asyncio.timeout does from Python 3.11 (we support 3.10);
        # asyncio.wait_for would run every request in a task of its own.
        task, fired = asyncio.current_task(), []
        timer = asyncio.get_running_loop().call_later(self.seconds, lambda: fired.append(task.cancel()))
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not fired or started:  # cancelled by someone else, or the answer is on its way: cut it
                raise
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled
                task.uncancel()
            detail = (
                f"no answer within {self.seconds:g} s (the request timeout)."
                " HINT: retry; if it persists, start the server with a larger --timeout or more --workers."
            )
            await _answer(send, 504, detail)
        finally:
            timer.cancel()


class JsonByDefault:
    """Read a POST body without a content type (or curl's default form type) as JSON, as a JSON API would.

    ``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; FastAPI would refuse it as not
    JSON. The body is not read here: only its declared type changes, so one that does not parse
    still gets FastAPI's 422.
    """

    _FORM_TYPES = (b"", b"application/x-www-form-urlencoded")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, declared as JSON where it came as form data or untyped."""
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(key, value) for key, value in scope["headers"] if key != b"content-type"]
            declared = dict(scope["headers"]).get(b"content-type", b"")
            if declared.split(b";")[0].strip().lower() in self._FORM_TYPES:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def api_key_from(variable: str | None) -> str | None:
    """The API key held by the environment variable ``variable`` (``--api-key-env``); ``None`` without one."""
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ConfigurationError(
            f"--api-key-env {variable}: the environment variable {variable} is not set or empty."
            f" HINT: export {variable}=<a long random key> before starting the server."
        )
    return key
