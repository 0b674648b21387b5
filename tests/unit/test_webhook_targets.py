"""SSRF defence of webhook URLs: the corpus of unsafe URLs is refused, with a message saying what to change."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from reelforge.core.webhook_targets import (
    TargetPolicy,
    UnresolvableHost,
    UnsafeWebhookURL,
    parse_target,
    pick_address,
    resolve,
)
from reelforge.gateway.errors import APIError
from reelforge.gateway.validation import check_webhook_destination, parse_create
from reelforge.settings import Settings

CORPUS = Path(__file__).parent / "data" / "unsafe_webhook_urls.txt"
PRODUCTION = TargetPolicy(allow_private=False)
DEVELOPMENT = TargetPolicy(allow_private=True)


def unsafe_urls() -> list[str]:
    lines = (line.strip() for line in CORPUS.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_corpus_is_large() -> None:
    assert len(unsafe_urls()) >= 60


@pytest.mark.parametrize("url", unsafe_urls())
def test_every_corpus_url_is_refused_with_a_400_naming_webhook_url(url: str) -> None:
    with pytest.raises(APIError) as refused:
        parse_create({"prompt": "a red circle", "webhook_url": url}, PRODUCTION)
        check_webhook_destination(url, PRODUCTION)  # names (localhost) are refused once resolved
    assert refused.value.status == 400 and refused.value.param == "webhook_url"
    assert refused.value.message.startswith("'webhook_url' is refused: ")
    assert refused.value.code == "invalid_webhook_url"


@pytest.mark.parametrize(("url", "advice"), [
    ("http://example.com/hook", "change the URL to https://"),
    ("https://2130706433/", "write the address as four decimal numbers"),
    ("https://u:p@example.com/", "remove the user:password@ part"),
    ("https://169.254.169.254/", "link-local"),
    ("https://[::ffff:127.0.0.1]/", "wrapped in the IPv6 address"),
    ("https://100.64.0.1/", "carrier-grade NAT"),
    ("https://example.com/a\x00b", "control character"),
    ("https://exämple.com/", "xn--"),
])
def test_the_message_says_what_is_wrong_and_what_to_change(url: str, advice: str) -> None:
    with pytest.raises(UnsafeWebhookURL, match=advice):
        parse_target(url, PRODUCTION)


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "https://[2001:4860:4860::8888]:8443/h",
                                 "https://hooks.example.com/a?b=c"])
def test_public_https_targets_pass(url: str) -> None:
    parse_target(url, PRODUCTION)


def test_development_allows_http_and_loopback_or_private_but_not_metadata_or_tricks() -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost:9/x", "http://10.1.2.3/", "http://[::1]:80/"):
        check_webhook_destination(url, DEVELOPMENT)
    for url in ("http://169.254.169.254/", "http://0.0.0.0/", "http://2130706433/", "http://u@127.0.0.1/",
                "http://224.0.0.1/"):
        with pytest.raises(UnsafeWebhookURL):
            parse_target(url, DEVELOPMENT)


def test_a_name_with_any_private_record_is_refused_and_the_first_public_one_pinned() -> None:
    assert pick_address("h.example", ["93.184.216.34", "2606:2800::1"], PRODUCTION) == \
        ipaddress.ip_address("93.184.216.34")
    with pytest.raises(UnsafeWebhookURL, match="resolves to 10.0.0.5"):
        pick_address("h.example", ["93.184.216.34", "10.0.0.5"], PRODUCTION)


def test_rebinding_is_caught_when_the_name_resolves_elsewhere_at_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    target = parse_target("https://rebind.example/hook", PRODUCTION)
    answers = iter(["93.184.216.34", "169.254.169.254"])

    def fake_getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert str(resolve(target, PRODUCTION)) == "93.184.216.34"  # at create time
    with pytest.raises(UnsafeWebhookURL, match="link-local"):  # at delivery: refused
        resolve(target, PRODUCTION)


def test_a_name_that_does_not_exist_is_a_400_but_a_dns_outage_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(errno: int) -> object:
        def getaddrinfo(*_: object, **__: object) -> None:
            raise socket.gaierror(errno, "lookup failed")
        return getaddrinfo

    monkeypatch.setattr(socket, "getaddrinfo", failing(socket.EAI_NONAME))
    with pytest.raises(APIError, match="could not be resolved"):
        check_webhook_destination("https://no-such-host.example/", PRODUCTION)
    monkeypatch.setattr(socket, "getaddrinfo", failing(socket.EAI_AGAIN))
    check_webhook_destination("https://flaky-dns.example/", PRODUCTION)  # checked again at delivery
    with pytest.raises(UnresolvableHost):
        resolve(parse_target("https://flaky-dns.example/", PRODUCTION), PRODUCTION)


def test_production_refuses_to_start_with_private_webhook_targets_allowed() -> None:
    with pytest.raises(ValueError, match="REELFORGE_WEBHOOK_ALLOW_PRIVATE"):
        Settings(environment="production", s3_secret_access_key="a-real-secret", webhook_allow_private=True)
    assert Settings(environment="development", webhook_allow_private=True).webhook_allow_private
    assert not Settings(environment="production", s3_secret_access_key="a-real-secret").webhook_allow_private
