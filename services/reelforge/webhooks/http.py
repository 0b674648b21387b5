"""One webhook POST, made with httpcore so that nothing happens behind our back: it connects to the
address the SSRF check approved (the name is not resolved again), follows no redirect (a 3xx is an
answer like any other), reads no proxy from the environment, and reads at most a few bytes of the
receiver's answer.

Pinning works at the socket: the connection pool's network backend opens the TCP connection to the
approved address, while the URL keeps the host name, so TLS sends it as SNI and checks the certificate
against it, and the Host header carries it (what the receiver's virtual hosting expects).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import httpcore
import httpx

from reelforge.core.webhook_targets import Address

# What a failed connection, TLS handshake, timeout or malformed answer raises.
TRANSPORT_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                    httpcore.UnsupportedProtocol)


class PinnedBackend(httpcore.SyncBackend):
    """Opens every TCP connection to one address, whatever host the URL names."""

    def __init__(self, address: Address) -> None:
        self.address = str(address)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        return super().connect_tcp(self.address, port, timeout, local_address, socket_options)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    excerpt: bytes  # the start of the body of a non-2xx answer; empty for 2xx


@lru_cache(maxsize=1)
def default_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # certifi's CA bundle, as every other HTTPS client of ours


def post(url: str, address: Address, body: bytes, headers: dict[str, str], timeout_s: float, max_bytes: int,
         ssl_context: ssl.SSLContext | None = None) -> Answer:
    """POST body to url over a connection to address. Raises one of TRANSPORT_ERRORS."""
    deadline = time.monotonic() + timeout_s
    timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
    with httpcore.ConnectionPool(ssl_context=ssl_context or default_ssl_context(), max_connections=1,
                                 network_backend=PinnedBackend(address)) as pool, \
            pool.stream("POST", url, headers=list(headers.items()), content=body,
                        extensions={"timeout": timeouts}) as response:
        answer_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        ok = 200 <= response.status < 300
        excerpt = b"" if ok else read_capped(response.iter_stream(), max_bytes, deadline)
        return Answer(response.status, answer_headers, excerpt)


def read_capped(chunks: Iterator[bytes], max_bytes: int, deadline: float) -> bytes:
    """At most max_bytes of a body, and nothing more once the deadline has passed: a huge or endless
    answer is never buffered, and closing the response drops the rest."""
    read = bytearray()
    for chunk in chunks:
        read += chunk[:max_bytes - len(read)]
        if len(read) >= max_bytes or time.monotonic() >= deadline:
            break
    return bytes(read)
