"""Security and abuse through the real gateway: scopes, revocation, tenant isolation, rate limit and
concurrent-job quota (the shared stack), and the prompt policy and admission control (a stack of their
own, without workers, so its queues only fill)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from redis import Redis

from reelforge.celery_app import celery_app
from reelforge.cli import main
from reelforge.core.contracts import Status
from reelforge.core.deliveries import DeliveryStore
from reelforge.core.lifecycle import Publisher
from reelforge.core.store import ACTIVE_COUNT_KEY, OUTBOX_KEY, JobStore
from reelforge.core.tenants import TenantRegistry
from reelforge.devstack.processes import free_port, start_redis
from reelforge.devstack.stack import Stack
from reelforge.gateway.main import create_app
from reelforge.runtime import Runtime, build_storage, redis_client
from reelforge.settings import Settings, get_settings

pytestmark = pytest.mark.integration

AUDIT = "/v1/organization/audit_logs"


@pytest.fixture()
def cli(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`reelforge ARGS` in this process against the shared stack's Redis -> click Result."""
    monkeypatch.setenv("REELFORGE_REDIS_URL", stack.info["redis_url"])
    get_settings.cache_clear()

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    yield run
    get_settings.cache_clear()


class Authorised:
    """The in-process app's client with one tenant's key on every request."""

    def __init__(self, app: TestClient, key: str) -> None:
        self.app, self.headers = app, {"Authorization": f"Bearer {key}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.app.get(path, headers=self.headers, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.app.post(path, headers=self.headers, **kw)


def client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.info["gateway_url"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30)


def make_key(cli: Any, tenant: str, *scopes: str) -> dict[str, Any]:
    result = cli("keys", "create", "--tenant", tenant, *[a for s in scopes for a in ("--scope", s)])
    assert result.exit_code == 0, result.output
    created: dict[str, Any] = json.loads(result.output)
    return created


def quick(prompt: str = "a small clip") -> dict[str, Any]:
    return {"prompt": prompt, "num_steps": 1, "priority": "batch"}


def missing_scope(response: httpx.Response, scope: str) -> bool:
    error = response.json()["error"]
    return (response.status_code == 403 and error["code"] == "missing_scope"
            and f"'{scope}'" in error["message"] and f"--scope {scope}" in error["message"])


def test_each_route_needs_its_scope(stack: Stack, cli: Any) -> None:
    reader = make_key(cli, "scopes", "read")
    writer = make_key(cli, "scopes", "create")
    admin = make_key(cli, "scopes", "admin")
    assert reader["scopes"] == ["read"] and make_key(cli, "scopes")["scopes"] == ["create", "read"]
    with client(stack, reader["api_key"]) as r, client(stack, writer["api_key"]) as w, \
            client(stack, admin["api_key"]) as a:
        video = w.post("/v1/videos", json=quick())
        assert video.status_code == 200, video.text
        vid = video.json()["id"]
        assert missing_scope(r.post("/v1/videos", json=quick()), "create")
        assert missing_scope(r.post(f"/v1/videos/{vid}/cancel"), "create")
        assert missing_scope(r.delete(f"/v1/videos/{vid}"), "create")
        assert r.get(f"/v1/videos/{vid}").status_code == 200 and r.get("/v1/videos").status_code == 200
        for path in ("/v1/videos", f"/v1/videos/{vid}", f"/v1/videos/{vid}/content"):
            assert missing_scope(w.get(path), "read"), path
        assert missing_scope(r.get(AUDIT), "admin") and missing_scope(w.get(AUDIT), "admin")
        assert missing_scope(a.get("/v1/videos"), "read") and missing_scope(a.post("/v1/videos", json=quick()), "create")
        assert a.get(AUDIT).status_code == 200
        assert w.delete(f"/v1/videos/{vid}").status_code == 200


def test_a_revoked_key_is_refused_at_once(stack: Stack, cli: Any) -> None:
    key = make_key(cli, "revocation")
    with client(stack, key["api_key"]) as c:
        vid = c.post("/v1/videos", json=quick()).json()["id"]  # the create path has now cached the key
        assert c.get(f"/v1/videos/{vid}").status_code == 200
        revoked = cli("keys", "revoke", key["key_id"])
        assert revoked.exit_code == 0 and json.loads(revoked.output)["revoked"] is True
        for response in (c.post("/v1/videos", json=quick()), c.get(f"/v1/videos/{vid}"), c.delete(f"/v1/videos/{vid}")):
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    listed = cli("keys", "list", "--tenant", "revocation")
    assert key["key_id"] in listed.output and key["api_key"] not in listed.output
    row = next(line for line in listed.output.splitlines() if key["key_id"] in line)
    assert re.search(r"create,read\s+\S+Z\s+\S+Z\s+\S+Z$", row), row  # created, revoked, last used
    again = cli("keys", "revoke", key["key_id"])
    assert json.loads(again.output)["already_revoked"] is True
    unknown = CliRunner().invoke(main, ["keys", "revoke", "key_nope"])
    assert unknown.exit_code == 1 and "keys list" in unknown.output
    JobStore(Redis.from_url(stack.info["redis_url"])).transition(vid, Status.cancelled)  # no key can any more


def test_another_tenants_resources_look_exactly_like_missing_ones(stack: Stack, cli: Any) -> None:
    owner = make_key(cli, "owner", "create", "read", "admin")
    intruder = make_key(cli, "intruder2", "create", "read", "admin")
    with client(stack, owner["api_key"]) as mine, client(stack, intruder["api_key"]) as other:
        vid = mine.post("/v1/videos", json=quick("private")).json()["id"]
        ghost = "video_" + "0" * 28
        for method, suffix in [("GET", ""), ("GET", "/content"), ("DELETE", ""), ("POST", "/cancel")]:
            theirs = other.request(method, f"/v1/videos/{vid}{suffix}")
            missing = other.request(method, f"/v1/videos/{ghost}{suffix}")
            assert theirs.status_code == missing.status_code == 404, (method, suffix)
            assert theirs.text.replace(vid, ghost) == missing.text, (method, suffix)
        listed = other.get("/v1/videos", params={"after": vid})
        assert listed.status_code == 400 and listed.text.replace(vid, ghost) == other.get(
            "/v1/videos", params={"after": ghost}).text
        theirs_log = other.get(AUDIT).json()["data"]
        assert theirs_log and all(e["tenant"] == "intruder2" and e["resource"] != vid for e in theirs_log)
        assert [e["resource"] for e in mine.get(AUDIT).json()["data"]] == [vid, owner["key_id"]]
        assert mine.delete(f"/v1/videos/{vid}").status_code == 200


def test_rate_limit_answers_429_with_retry_after(stack: Stack, cli: Any) -> None:
    key = make_key(cli, "ratelimited")
    shown = cli("limits", "--tenant", "ratelimited", "--rate", "0.01", "--burst", "2")
    assert json.loads(shown.output)["effective"] == {"rate_per_s": 0.01, "burst": 2,
                                                     "max_concurrent_jobs": get_settings().max_concurrent_jobs}
    with client(stack, key["api_key"]) as c:
        ids = [c.post("/v1/videos", json=quick()).json()["id"] for _ in range(2)]
        refused = c.post("/v1/videos", json=quick())
        for vid in ids:
            c.delete(f"/v1/videos/{vid}")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert 90 <= int(refused.headers["retry-after"]) <= 100  # one token every 100 s
    assert f"retry after {refused.headers['retry-after']} s" in error["message"]


def test_concurrent_job_quota_is_released_when_a_job_ends(stack: Stack, cli: Any) -> None:
    key = make_key(cli, "quota")
    cli("limits", "--tenant", "quota", "--max-concurrent", "1")
    with client(stack, key["api_key"]) as c:
        first = c.post("/v1/videos", json=quick()).json()["id"]
        refused = c.post("/v1/videos", json=quick())
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "concurrent_jobs_limit_exceeded"
        assert refused.headers["retry-after"] == str(get_settings().concurrency_retry_after_s)
        # Completion and failure free the slot in the same transition script (test_abuse_limits.py); here
        # the gateway's own ends: a cancel, then a delete of a running job.
        assert c.post(f"/v1/videos/{first}/cancel").status_code == 200
        second = c.post("/v1/videos", json=quick())
        assert second.status_code == 200, second.text
        assert c.delete(f"/v1/videos/{second.json()['id']}").status_code == 200
        third = c.post("/v1/videos", json=quick())
        assert third.status_code == 200, third.text
        assert c.delete(f"/v1/videos/{third.json()['id']}").status_code == 200
    assert JobStore(Redis.from_url(stack.info["redis_url"])).active_jobs("quota") == 0


def test_audit_log_records_who_did_what(stack: Stack, cli: Any) -> None:
    key = make_key(cli, "audited", "create", "read", "admin")
    with client(stack, key["api_key"]) as c:
        vid = c.post("/v1/videos", json=quick()).json()["id"]
        c.post(f"/v1/videos/{vid}/cancel")
        c.post(f"/v1/videos/{vid}/cancel")  # already cancelled: answered from the record, still audited
        c.delete(f"/v1/videos/{vid}")
        page = c.get(AUDIT, params={"limit": 2}).json()
        rest = c.get(AUDIT, params={"after": page["last_id"]}).json()
        assert c.get(AUDIT, params={"after": "not-an-id"}).status_code == 400
        assert c.get(AUDIT, params={"after": "99999999999999999999-0"}).status_code == 400
    assert page["has_more"] is True and rest["has_more"] is False
    assert rest["data"][-1]["action"] == "api_key.create"  # by `reelforge keys create`, oldest
    entries = page["data"] + rest["data"][:-1]
    assert [(e["action"], e["resource"], e["outcome"]) for e in entries] == [
        ("video.delete", vid, "ok"), ("video.cancel", vid, "ok"), ("video.cancel", vid, "ok"),
        ("video.create", vid, "ok")]
    assert {(e["tenant"], e["key_id"]) for e in entries} == {("audited", key["key_id"])}
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["trace_id"] or "") for e in entries), entries
    printed = [json.loads(line) for line in cli("audit", "--tenant", "audited").output.splitlines()]
    assert [e["id"] for e in printed[:4]] == [e["id"] for e in entries]
    assert printed[-1]["action"] == "api_key.create" and printed[-1]["key_id"].startswith("cli")
    make_key(cli, "audited-other")
    everyone = [json.loads(line) for line in cli("audit", "--limit", "500").output.splitlines()]
    assert {"audited", "audited-other"} <= {e["tenant"] for e in everyone}


# --- prompt policy and admission control: the gateway app in this process on a Redis of its own, with
# nothing relaying its outbox, so the queue only fills ------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Redis]]:
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("guarded"))
    url = f"redis://127.0.0.1:{port}/0"
    settings = Settings(
        environment="development", redis_url=url, broker_url=f"redis://127.0.0.1:{port}/1",
        prompt_blocklist=["forbiddenword", "bad phrase"], prompt_blocklist_regexes=[r"\bsecret\s*sauce\b"],
        prompt_classifier="tests.fixtures.prompt_classifiers:no_dragons",
        admission_max_queue_depth=3, admission_check_interval_s=0.05)
    redis = redis_client(url)
    rt = Runtime(settings=settings, redis=redis, store=JobStore(redis), tenants=TenantRegistry(redis),
                 storage=build_storage(settings), publisher=Publisher(celery_app),
                 deliveries=DeliveryStore(redis, settings.asset_ttl_s))
    with TestClient(create_app(rt)) as app:
        yield app, redis
    proc.stop()


@pytest.mark.parametrize(("prompt", "rule"), [
    ("a ｆｏｒｂｉｄｄｅｎｗｏｒｄ in full-width letters", "blocklist term"),
    ("forbidden\u200bword with a zero-width space", "blocklist term"),
    ("a BAD   PHRASE", "blocklist term"),
    ("the Secret Sauce", "blocklist regex #1"),
    ("a dragon over a castle", "classifier"),
])
def test_policy_refuses_before_anything_is_written(
    guarded: tuple[TestClient, Redis], prompt: str, rule: str
) -> None:
    app, redis = guarded
    registry = TenantRegistry(redis)
    tenant = "policy-" + hashlib.sha1(prompt.encode()).hexdigest()[:8]
    key_id, key = registry.create_key(tenant, scopes=["create", "read", "admin"])
    outbox = redis.llen(OUTBOX_KEY)
    c = Authorised(app, key)
    response = c.post("/v1/videos", json={"prompt": prompt})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("content_policy_violation", "prompt")
    assert not any(term in error["message"].lower() for term in ("forbiddenword", "bad phrase", "sauce"))
    assert ("dragons" in error["message"]) == (rule == "classifier")  # the classifier's own words
    assert c.get("/v1/videos").json()["data"] == [] and redis.llen(OUTBOX_KEY) == outbox
    [entry] = c.get(AUDIT).json()["data"]
    assert (entry["action"], entry["outcome"], entry["detail"], entry["key_id"]) == (
        "video.refuse", "content_policy_violation", rule, key_id)
    assert redis.hget(ACTIVE_COUNT_KEY, tenant) is None


def test_overloaded_queue_answers_503_until_it_drains(guarded: tuple[TestClient, Redis]) -> None:
    app, redis = guarded
    _, key = TenantRegistry(redis).create_key("admission")
    c = Authorised(app, key)
    while redis.llen(OUTBOX_KEY) <= 3:  # nothing relays here: the outbox only grows
        assert c.post("/v1/videos", json={"prompt": "a clean prompt"}).status_code == 200
    time.sleep(0.1)  # past admission_check_interval_s (0.05 s): the next create rereads the queues
    refused = c.post("/v1/videos", json={"prompt": "one more"})
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "overloaded" and refused.headers["retry-after"] == "15"
    assert "outbox" in refused.json()["error"]["message"]
    redis.delete(OUTBOX_KEY)
    time.sleep(0.1)
    assert c.post("/v1/videos", json={"prompt": "after the drain"}).status_code == 200
