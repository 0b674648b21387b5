"""The parts of a webhook delivery that need no stack: schedule, Retry-After, signatures, the pinned POST."""

from __future__ import annotations

import ipaddress
import random
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from reelforge.settings import Settings
from reelforge.webhooks import http
from reelforge.webhooks.retry import next_delay_s, retry_after_s
from reelforge.webhooks.tasks import attempt_outcome, sign

STANDARD = Settings().webhook_retry_schedule_s
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def test_the_default_schedule_is_the_standard_webhooks_one() -> None:
    assert STANDARD == [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]


def test_delays_follow_the_schedule_within_the_jitter_and_end_after_the_last_attempt() -> None:
    rng = random.Random(7)
    for attempt in range(1, len(STANDARD)):
        delays = [next_delay_s(attempt, STANDARD, 0.1, rng=rng) for _ in range(200)]
        base = STANDARD[attempt]
        assert all(d is not None and 0.9 * base <= d <= 1.1 * base for d in delays)
        assert len(set(delays)) > 1 or base == 0
    assert next_delay_s(len(STANDARD), STANDARD, 0.1) is None


def test_retry_after_is_honoured_up_to_the_maximum() -> None:
    assert next_delay_s(1, STANDARD, 0.0, retry_after=120, retry_after_max_s=3600) == 120
    assert next_delay_s(1, STANDARD, 0.0, retry_after=10**6, retry_after_max_s=3600) == 3600
    assert next_delay_s(3, STANDARD, 0.0, retry_after=1, retry_after_max_s=3600) == 1800  # never shorter


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_s("30", now) == 30
    assert retry_after_s(format_datetime(now + timedelta(minutes=2), usegmt=True), now) == 120
    assert retry_after_s(format_datetime(now - timedelta(minutes=2), usegmt=True), now) == 0
    assert retry_after_s("soon", now) is None and retry_after_s(None, now) is None and retry_after_s("-5", now) is None


def test_during_a_rotation_each_secret_verifies_the_message() -> None:
    old, new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    payload = '{"type":"video.completed"}'
    headers = sign([new, old], "msg_1", payload, datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(payload, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QkJCQkJCQkJCQkJCQkJCQkJCQkJC").verify(payload, headers)


def test_attempt_outcomes() -> None:
    assert [attempt_outcome(s) for s in (204, 302, 410, 503, None, 101)] == [
        "delivered", "redirect", "client_error", "server_error", "network_error", "other_status"]
    assert attempt_outcome(None, refused=True) == "refused_target"


class Receiver:
    """Records each request's Host header and SNI; answers as `respond` says."""

    def __init__(self, respond: Any, tls: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        self.sni: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                owner.hosts.append(self.headers["host"])
                respond(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: owner.sni.append(name)  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return respond


@pytest.fixture()
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("receiver", [_answer(204)], indirect=True)
def test_the_post_goes_to_the_pinned_address_with_the_url_host_in_the_host_header(receiver: Receiver) -> None:
    answer = http.post(f"http://hooks.invalid:{receiver.port}/h", LOOPBACK, b"{}", {}, 5, 1024)
    assert answer.status == 204 and answer.excerpt == b""
    assert receiver.hosts == [f"hooks.invalid:{receiver.port}"]  # never resolved: .invalid does not exist


@pytest.mark.parametrize("receiver", [_answer(302, b"moved", {"location": "http://169.254.169.254/"})], indirect=True)
def test_a_redirect_is_an_answer_not_followed(receiver: Receiver) -> None:
    answer = http.post(f"http://127.0.0.1:{receiver.port}/h", LOOPBACK, b"{}", {}, 5, 1024)
    assert answer.status == 302 and answer.headers["location"] == "http://169.254.169.254/"
    assert len(receiver.hosts) == 1


def _endless(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(500)
    handler.send_header("transfer-encoding", "chunked")
    handler.end_headers()
    chunk = b"x" * 65536
    try:
        for _ in range(100_000):  # 6.5 GB if anyone read it all
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass  # the client hung up after its excerpt: what we want


@pytest.mark.parametrize("receiver", [_endless], indirect=True)
def test_a_huge_answer_is_read_only_up_to_the_cap(receiver: Receiver) -> None:
    started = time.monotonic()
    answer = http.post(f"http://127.0.0.1:{receiver.port}/h", LOOPBACK, b"{}", {}, 5, 1024)
    assert answer.status == 500 and answer.excerpt == b"x" * 1024
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_a_transport_error() -> None:
    server = Receiver(_answer(204))
    port = server.port
    server.close()
    server.server.server_close()
    with pytest.raises(http.TRANSPORT_ERRORS):
        http.post(f"http://127.0.0.1:{port}/h", LOOPBACK, b"{}", {}, 2, 1024)


def test_https_to_a_pinned_address_keeps_sni_and_checks_the_certificate_against_the_name(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server = Receiver(_answer(200), server_tls)
    client_tls = ssl.create_default_context(cafile=str(cert))
    try:
        answer = http.post(f"https://hooks.example:{server.port}/h", LOOPBACK, b"{}", {}, 5, 1024, client_tls)
        assert answer.status == 200
        assert server.sni == ["hooks.example"] and server.hosts == [f"hooks.example:{server.port}"]
        with pytest.raises(http.TRANSPORT_ERRORS):  # the certificate does not name this host
            http.post(f"https://other.example:{server.port}/h", LOOPBACK, b"{}", {}, 5, 1024, client_tls)
    finally:
        server.close()
