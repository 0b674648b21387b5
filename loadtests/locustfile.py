"""Load test (a script, not a timed test): simulated API clients against a running stack, with checks.

Each simulated user behaves like a product app: create a video (JSON or multipart), poll it until it ends,
download its content when it completed, list its videos now and then, start again. A refused create
(429 rate limit / quota, 503 admission control) waits Retry-After and tries again.

Checked over the whole run, and written to REELFORGE_LOAD_RESULTS (JSON, with a markdown table beside it):
- no 5xx other than deliberate 503s (a 503 carrying Retry-After);
- every 429 and 503 carries Retry-After;
- every job the API accepted reaches a terminal state (all polled at the end, up to REELFORGE_LOAD_DRAIN_S);
- p99 create latency is reported.
The exit code is 1 when a check fails. Run it with loadtests/run_locust.sh (docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from locust import HttpUser, between, events, task
from locust.env import Environment

API_KEY = os.environ.get("REELFORGE_LOAD_API_KEY", "")
RESULTS = Path(os.environ.get("REELFORGE_LOAD_RESULTS", "loadtests/results/locust.json"))
DRAIN_S = float(os.environ.get("REELFORGE_LOAD_DRAIN_S", "900"))
TERMINAL = {"completed", "failed", "cancelled"}
MAX_RETRY_WAIT_S = 30.0
# The cheapest clip the model serves: the load is on the platform, not on denoising.
CREATE_BODY = {"prompt": "a red circle moving left on a black background", "size": "64x64", "seconds": "2",
               "fps": 8, "num_steps": 1, "priority": "interactive"}


class Tally:
    """What every user saw, shared by all users of this process (locust users are greenlets)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.violations: list[str] = []
        self.accepted: set[str] = set()

    def record(self, name: str, response: Any) -> None:
        status = response.status_code
        retry_after = response.headers.get("retry-after")
        with self.lock:
            self.statuses[f"{name} {status}"] += 1
            if status in (429, 503) and not retry_after:
                self.violations.append(f"{name} answered {status} without Retry-After")
            if status >= 500 and not (status == 503 and retry_after):
                self.violations.append(f"{name} answered {status}: {response.text[:200]}")


tally = Tally()
logging.getLogger("httpx").setLevel(logging.WARNING)  # the final drain polls every job: no line per request


class VideoClient(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        if not API_KEY:
            raise RuntimeError("set REELFORGE_LOAD_API_KEY (run_locust.sh does it from the stack's stack.json)")
        self.client.headers["Authorization"] = f"Bearer {API_KEY}"
        self.current: str | None = None
        self.not_before = 0.0

    def _call(self, method: str, path: str, name: str, **kwargs: Any) -> Any:
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as response:
            tally.record(name, response)
            if response.status_code in (429, 503) and response.headers.get("retry-after"):
                response.success()  # a deliberate refusal: counted, not a failure
            return response

    @task(10)
    def create_or_poll(self) -> None:
        if time.monotonic() < self.not_before:
            return
        if self.current is None:
            self._create()
        else:
            self._poll()

    @task(1)
    def list_videos(self) -> None:
        self._call("GET", "/v1/videos?limit=20", "GET /v1/videos")

    def _create(self) -> None:
        if random.random() < 0.2:  # the multipart spelling that the OpenAI SDK may send
            files = {k: (None, str(v)) for k, v in CREATE_BODY.items()}
            response = self._call("POST", "/v1/videos", "POST /v1/videos", files=files)
        else:
            response = self._call("POST", "/v1/videos", "POST /v1/videos", json=CREATE_BODY)
        if response.status_code == 200:
            self.current = response.json()["id"]
            with tally.lock:
                tally.accepted.add(self.current)
        elif response.status_code in (429, 503):
            wait = float(response.headers.get("retry-after") or 1)
            self.not_before = time.monotonic() + min(wait, MAX_RETRY_WAIT_S)

    def _poll(self) -> None:
        response = self._call("GET", f"/v1/videos/{self.current}", "GET /v1/videos/{id}")
        if response.status_code != 200:
            return
        if response.json()["status"] == "completed":
            variant = random.choice(["video", "video", "thumbnail", "spritesheet"])
            self._call("GET", f"/v1/videos/{self.current}/content?variant={variant}",
                       "GET /v1/videos/{id}/content")
        if response.json()["status"] in TERMINAL:
            self.current = None


def drain(host: str, job_ids: set[str]) -> dict[str, str]:
    """Poll every accepted job until it ends or DRAIN_S passes; -> job id -> last status."""
    last: dict[str, str] = {}
    pending = set(job_ids)
    deadline = time.monotonic() + DRAIN_S
    with httpx.Client(base_url=host, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
        while pending and time.monotonic() < deadline:
            for job_id in sorted(pending):
                response = client.get(f"/v1/videos/{job_id}")
                last[job_id] = response.json()["status"] if response.status_code == 200 else f"http {response.status_code}"
                if last[job_id] in TERMINAL:
                    pending.discard(job_id)
            if pending:
                time.sleep(2)
    return last


@events.quitting.add_listener
def check_and_report(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if runner is None or environment.parsed_options is None:
        return
    create = environment.stats.get("POST /v1/videos", "POST")
    final = drain(environment.host or "", tally.accepted)
    unfinished = {job_id: status for job_id, status in final.items() if status not in TERMINAL}
    outcome = Counter(final.values())
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
        "users": environment.parsed_options.num_users,
        "run_time_s": environment.parsed_options.run_time,
        "requests": environment.stats.total.num_requests,
        "requests_per_s": round(environment.stats.total.total_rps, 1),
        "create_requests": create.num_requests,
        "create_p50_ms": create.get_response_time_percentile(0.5),
        "create_p99_ms": create.get_response_time_percentile(0.99),
        "statuses": dict(sorted(tally.statuses.items())),
        "accepted_jobs": len(tally.accepted),
        "job_outcomes": dict(outcome),
        "unfinished_jobs": len(unfinished),
        "violations": tally.violations[:50],
        "violation_count": len(tally.violations),
    }
    checks = {
        "no 5xx other than 503 with Retry-After": not any("answered 5" in v for v in tally.violations),
        "every 429/503 carries Retry-After": not any("without Retry-After" in v for v in tally.violations),
        "every accepted job reached a terminal state": not unfinished,
    }
    results["checks"] = checks
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(markdown(results))
    print(RESULTS.with_suffix(".md").read_text())
    environment.process_exit_code = 0 if all(checks.values()) else 1


def markdown(r: dict[str, Any]) -> str:
    rows = [
        ("date, machine", f"{r['date']}, {r['machine']}"),
        ("users x duration", f"{r['users']} x {r['run_time_s']} s"),
        ("requests (per s)", f"{r['requests']} ({r['requests_per_s']})"),
        ("creates; p50 / p99 latency", f"{r['create_requests']}; {r['create_p50_ms']} ms / {r['create_p99_ms']} ms"),
        ("accepted jobs; outcomes", f"{r['accepted_jobs']}; {r['job_outcomes']}"),
        ("status counts", ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())),
        *((check, "pass" if ok else "FAIL") for check, ok in r["checks"].items()),
    ]
    return "| measure | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
