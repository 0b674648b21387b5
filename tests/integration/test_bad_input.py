"""A corpus of malformed requests against a real gateway process: every one gets a clear 4xx with the OpenAI
error envelope, never a 5xx; slow clients are cut off without tying up the gateway."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from reelforge.devstack.stack import Stack
from tests.integration.conftest import new_tenant_key

pytestmark = pytest.mark.integration

VALID = b'{"prompt": "a red circle", "size": "64x64"}'
BOUNDARY = "reelforgeboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

# name -> (content type or None for none sent, raw body, expected status)
JSON_CORPUS: dict[str, tuple[str | None, bytes, int]] = {
    "truncated object": ("application/json", b'{"prompt": "a red', 400),
    "empty body": ("application/json", b"", 400),
    "array": ("application/json", b'[{"prompt": "x"}]', 400),
    "string": ("application/json", b'"a red circle"', 400),
    "null": ("application/json", b"null", 400),
    "number": ("application/json", b"42", 400),
    "missing value": ("application/json", b'{"prompt": }', 400),
    "trailing garbage": ("application/json", VALID + b"}}", 400),
    "invalid utf-8": ("application/json", b'{"prompt": "\xff\xfe"}', 400),
    "single quotes": ("application/json", b"{'prompt': 'x'}", 400),
    "deep nesting": ("application/json", b'{"prompt": "x", "metadata": ' + b"[" * 20000 + b"]" * 20000 + b"}", 400),
    "huge integer": ("application/json", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", 400),
    "float overflow": ("application/json", b'{"prompt": "x", "seed": 1e400}', 400),
    "NaN guidance": ("application/json", b'{"prompt": "x", "guidance_scale": NaN}', 400),
    "Infinity guidance": ("application/json", b'{"prompt": "x", "guidance_scale": Infinity}', 400),
    "prompt is a number": ("application/json", b'{"prompt": 123}', 400),
    "prompt is an object": ("application/json", b'{"prompt": {"text": "x"}}', 400),
    "missing prompt": ("application/json", b'{"size": "64x64"}', 400),
    "NUL in prompt": ("application/json", b'{"prompt": "a\\u0000b"}', 400),
    "lone surrogate escape": ("application/json", b'{"prompt": "a\\ud800b"}', 400),
    "lone surrogate in model": ("application/json", b'{"prompt": "x", "model": "\\udfff"}', 400),
    "lone surrogate as bytes": ("application/json", b'{"prompt": "a\xed\xa0\x80b"}', 400),
    "lone surrogate in metadata": ("application/json", b'{"prompt": "x", "metadata": {"k": "\\ud9ff"}}', 400),
    "metadata is a list": ("application/json", b'{"prompt": "x", "metadata": ["a"]}', 400),
    "metadata value not a string": ("application/json", b'{"prompt": "x", "metadata": {"a": {"b": 1}}}', 400),
    "unknown field": ("application/json", b'{"prompt": "x", "quality": "hd"}', 400),
    "seed negative": ("application/json", b'{"prompt": "x", "seed": -1}', 400),
    "seconds bool": ("application/json", b'{"prompt": "x", "seconds": true}', 400),
    "no content type, not json": (None, b"prompt=x", 400),
}


def multipart(*parts: tuple[str, str | bytes], filename: str | None = None) -> bytes:
    out = b""
    for name, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        data = value.encode() if isinstance(value, str) else value
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


FORM_CORPUS: dict[str, tuple[str | None, bytes, int]] = {
    "no boundary": ("multipart/form-data", multipart(("prompt", "x")), 400),
    "wrong boundary": ("multipart/form-data; boundary=other", multipart(("prompt", "x")), 400),
    "truncated": (MULTIPART, multipart(("prompt", "x"))[:-12], 400),
    "no parts": (MULTIPART, f"--{BOUNDARY}--\r\n".encode(), 400),
    "garbage": (MULTIPART, b"\x00\x01\x02 not multipart at all", 400),
    "missing disposition": (MULTIPART, f"--{BOUNDARY}\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(), 400),
    "file upload": (MULTIPART, multipart(("prompt", "x"), filename="prompt.txt"), 400),
    "field twice": (MULTIPART, multipart(("prompt", "x"), ("prompt", "y")), 400),
    "too many fields": (MULTIPART, multipart(*[(f"metadata[k{i}]", "v") for i in range(80)], ("prompt", "x")), 400),
    "metadata not json": (MULTIPART, multipart(("prompt", "x"), ("metadata", "{not json")), 400),
    "metadata json list plus bracket field": (
        MULTIPART, multipart(("prompt", "x"), ("metadata", "[1, 2]"), ("metadata[a]", "b")), 400),
    "metadata json string": (MULTIPART, multipart(("prompt", "x"), ("metadata", '"text"')), 400),
    "metadata deep nesting": (MULTIPART, multipart(("prompt", "x"), ("metadata", "[" * 20000 + "]" * 20000)), 400),
    "metadata huge integer": (MULTIPART, multipart(("prompt", "x"), ("metadata", '{"k": ' + "9" * 5000 + "}")), 400),
    "metadata surrogate": (MULTIPART, multipart(("prompt", "x"), ("metadata", '{"k": "\\ud800"}')), 400),
    "control character in field": (MULTIPART, multipart(("prompt", b"a\x00b")), 400),
    "seed not a number": (MULTIPART, multipart(("prompt", "x"), ("seed", "ten")), 400),
    "urlencoded NUL": ("application/x-www-form-urlencoded", b"prompt=a%00b", 400),
    "urlencoded no prompt": ("application/x-www-form-urlencoded", b"size=64x64", 400),
}

CONTENT_TYPE_CORPUS: dict[str, tuple[str | None, bytes, int]] = {
    "text/plain": ("text/plain", VALID, 415),
    "xml": ("application/xml", b"<prompt>x</prompt>", 415),
    "octet-stream": ("application/octet-stream", VALID, 415),
    "garbage content type": ("!!!/???", VALID, 415),
}


@pytest.fixture(scope="module")
def gateway(gateway_only: Stack) -> str:
    return str(gateway_only.info["gateway_url"])


@pytest.fixture(scope="module")
def key(gateway_only: Stack) -> str:
    return new_tenant_key(gateway_only, "badinput")


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert len(error["message"]) > 10 and error["code"], error
    return error


@pytest.mark.parametrize("case", [*JSON_CORPUS, *FORM_CORPUS, *CONTENT_TYPE_CORPUS])
def test_malformed_create_is_a_clear_4xx(case: str, gateway: str, key: str) -> None:
    content_type, body, status = {**JSON_CORPUS, **FORM_CORPUS, **CONTENT_TYPE_CORPUS}[case]
    headers = {"Authorization": f"Bearer {key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    assert_envelope(httpx.post(f"{gateway}/v1/videos", content=body, headers=headers, timeout=30), status)


def test_valid_bodies_of_each_kind_are_accepted(gateway: str, key: str) -> None:
    """The corpus is refused for what is wrong in it, not because nothing gets through."""
    headers = {"Authorization": f"Bearer {key}"}
    as_json = httpx.post(f"{gateway}/v1/videos", content=VALID, headers={**headers, "Content-Type": "application/json"})
    as_form = httpx.post(f"{gateway}/v1/videos", content=multipart(("prompt", "x"), ("metadata[a]", "b")),
                         headers={**headers, "Content-Type": MULTIPART})
    assert as_json.status_code == as_form.status_code == 200, (as_json.text, as_form.text)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(chunked: bool, gateway: str, key: str) -> None:
    body = b'{"prompt": "' + b"x" * 100_000 + b'"}'
    content: Any = iter([body[i:i + 8192] for i in range(0, len(body), 8192)]) if chunked else body
    response = httpx.post(f"{gateway}/v1/videos", content=content, timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert assert_envelope(response, 413)["code"] == "body_too_large"


def test_unauthenticated_garbage_is_401_not_parsed(gateway: str) -> None:
    response = httpx.post(f"{gateway}/v1/videos", content=b"[" * 1000, headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


def _open_trickle(gateway: str, key: str, declared: int) -> socket.socket:
    """Headers sent, then one byte of a body of `declared` bytes: the rest never comes."""
    url = urlsplit(gateway)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    sock.sendall((f"POST /v1/videos HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{").encode())
    return sock


def _read_until_closed(sock: socket.socket) -> str:
    """The whole answer: headers and body may come in separate packets; the server closes after it."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_slow_client_is_cut_off_with_408_and_does_not_block_others(gateway_only: Stack, gateway: str,
                                                                   key: str) -> None:
    timeout_s = float(gateway_only.env["REELFORGE_BODY_READ_TIMEOUT_S"])
    slow = [_open_trickle(gateway, key, 1000) for _ in range(20)]
    try:
        started = time.monotonic()
        for _ in range(5):  # the gateway keeps serving while 20 bodies hang
            assert httpx.get(f"{gateway}/healthz", timeout=5).status_code == 200
            ok = httpx.post(f"{gateway}/v1/videos", content=VALID, timeout=5,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            assert ok.status_code == 200
        assert time.monotonic() - started < 5
        answer = _read_until_closed(slow[0])
        waited = time.monotonic() - started
        assert answer.startswith("HTTP/1.1 408"), answer[:200]
        assert '"code":"body_timeout"' in answer.replace(" ", "") and "connection: close" in answer.lower()
        assert waited < timeout_s + 10
    finally:
        for sock in slow:
            sock.close()
