"""Refuse request bodies over a size limit before they are buffered, whether or not Content-Length is
sent, and bodies that do not arrive in time: a client that trickles its body (slowloris) gets a 408 and
the connection is closed, instead of holding a request open for as long as it likes. uvicorn itself has
no body read timeout (its timeout_keep_alive covers idle connections between requests only)."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Methods whose requests never carry a body we read: they pass through untouched (the download path
# listens for the client's disconnect on receive for as long as it streams).
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class _Refused(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, self._too_large())
            return
        # The HTTP parser frames a Content-Length body, so it cannot grow past what was declared: only
        # chunked bodies need counting.
        count = declared is None or not declared.isdigit()
        seen = 0
        body_done = False
        deadline: float | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal seen, body_done, deadline
            if body_done:  # later receives wait for a disconnect: no deadline applies
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.read_timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refused(408, f"The request body did not arrive within {self.read_timeout_s:g} s; send "
                                    "the whole body at once.", "body_timeout") from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if count and seen > self.max_bytes:
                    raise self._too_large()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except _Refused as refused:
            if not started:
                await self._refuse(send, refused)

    def _too_large(self) -> _Refused:
        return _Refused(413, f"Request body is larger than {self.max_bytes} bytes; send a shorter prompt or fewer "
                             "metadata entries.", "body_too_large")

    async def _refuse(self, send: Send, refused: _Refused) -> None:
        body = json.dumps({"error": {
            "message": refused.message, "type": "invalid_request_error", "param": None, "code": refused.code,
        }}).encode()
        # The rest of the body may still be on its way: close rather than parse it as the next request.
        await send({"type": "http.response.start", "status": refused.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
