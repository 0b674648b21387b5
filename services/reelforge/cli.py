"""The `reelforge` command: run the local stack, run one deployable, manage keys, generate a video."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from reelforge.core.tenants import TenantRegistry
    from reelforge.worker_health import Heartbeat

DEFAULT_DATA_DIR = Path(".reelforge")
EXAMPLE_PROMPT = "a red circle moving left on a black background"


class _Group(click.Group):
    """Turns invalid REELFORGE_* settings into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from pydantic import ValidationError

        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
            raise click.ClickException(f"invalid REELFORGE_* settings: {problems}") from None


@click.group(cls=_Group)
def main() -> None:
    """reelforge: serve text-to-video models behind an OpenAI-compatible Videos API."""


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True,
              help="All state of this stack (Redis AOF, object store, logs) lives here.")
@click.option("--port", type=int, default=8000, show_default=True, help="Gateway port.")
@click.option("--redis-port", type=int, default=0, help="0 picks a free port.")
@click.option("--s3-port", type=int, default=0, help="0 picks a free port.")
@click.option("--detach", is_flag=True, help="Return once the stack is ready; stop it with `reelforge down`.")
@click.option("--engine-backend", type=click.Choice(["inprocess", "triton"]), default="inprocess", show_default=True,
              help="triton also starts Triton Inference Server with the engine's model repository.")
@click.option("--gpu-concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPU worker processes (with --engine-backend triton each is only a client).")
def up(data_dir: Path, port: int, redis_port: int, s3_port: int, detach: bool, engine_backend: str,
       gpu_concurrency: int) -> None:
    """Run the whole local stack: Redis, SeaweedFS, gateway and the three workers (and Triton)."""
    from reelforge.devstack.stack import StackConfig, StackError, start_stack

    config = StackConfig(data_dir=data_dir.resolve(), gateway_port=port, redis_port=redis_port,
                         s3_port=s3_port, engine_backend=engine_backend, gpu_concurrency=gpu_concurrency)
    # Ctrl-C aborts a start (start_stack stops what it started), even where SIGINT arrives ignored: a
    # shell without job control starts background commands, and all their children, with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack = start_stack(config, echo=lambda line: click.echo(line, err=True))
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    if not detach:  # from here a signal only asks the loop below to stop, wherever it lands
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    info = stack.info
    click.echo(f"gateway:        {info['gateway_url']}")
    click.echo(f"api key:        {info['api_key']}  (tenant {info['tenant']})")
    click.echo(f"webhook secret: {info['webhook_secret']}")
    click.echo(f"data dir:       {config.data_dir}")
    click.echo("metrics:        " + ", ".join(f"{name} {target}" for name, target in info["metrics"].items()))
    if detach:  # the processes keep running; `reelforge down` finds them through stack.json
        click.echo(f"stop with:      reelforge down --data-dir {data_dir}")
        return
    click.echo("running; Ctrl-C stops everything", err=True)
    while not stopping:
        dead = stack.dead_components()
        if dead:
            click.echo(f"component(s) exited: {', '.join(dead)}; stopping the stack", err=True)
            break
        time.sleep(1)
    stack.stop()


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True)
def down(data_dir: Path) -> None:
    """Stop a stack started with `reelforge up --detach`."""
    from reelforge.devstack.stack import stop_detached

    stopped = stop_detached(data_dir.resolve())
    click.echo("stopped" if stopped else f"no running stack under {data_dir}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
def gateway(host: str, port: int, workers: int) -> None:
    """Run the HTTP gateway (uvicorn); /metrics on the same port."""
    if workers > 1:  # every uvicorn process serves /metrics, so each must see all their values
        from reelforge.observability.multiproc import use_multiprocess_dir

        use_multiprocess_dir("gateway")
    import uvicorn

    from reelforge.logging import configure_logging

    configure_logging()
    uvicorn.run("reelforge.gateway.main:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level="warning")


@main.command()
@click.argument("role", type=click.Choice(["gpu", "postprocess", "webhooks"]))
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Processes; keep 1 per GPU for the gpu role.")
@click.option("--queues", default=None, help="Override the queues this worker consumes (comma-separated).")
def worker(role: str, concurrency: int, queues: str | None) -> None:
    """Run a Celery worker for one stage; its processes' metrics on REELFORGE_METRICS_PORT."""
    from reelforge.observability.multiproc import use_multiprocess_dir

    use_multiprocess_dir(f"worker-{role}")  # before anything imports prometheus_client
    from reelforge.celery_app import (
        QUEUE_GPU_BATCH,
        QUEUE_GPU_INTERACTIVE,
        QUEUE_POSTPROCESS,
        QUEUE_WEBHOOKS,
        celery_app,
    )
    from reelforge.logging import configure_logging
    from reelforge.observability import metrics
    from reelforge.observability.tracing import configure_tracing
    from reelforge.observability.worker import connect_task_metrics
    from reelforge.settings import get_settings
    from reelforge.worker_health import consumer_heartbeat_step

    configure_logging()
    settings = get_settings()
    configure_tracing(f"worker-{role}", settings)
    connect_task_metrics((role,))
    try:
        metrics.serve(settings.metrics_port)
    except metrics.MetricsPortTaken as exc:
        raise click.ClickException(str(exc)) from None
    default_queues = {
        "gpu": f"{QUEUE_GPU_INTERACTIVE},{QUEUE_GPU_BATCH}",
        "postprocess": QUEUE_POSTPROCESS,
        "webhooks": QUEUE_WEBHOOKS,
    }
    heartbeat = _heartbeat()
    if heartbeat is not None:
        celery_app.steps["consumer"].add(consumer_heartbeat_step(heartbeat))
    if role == "gpu":
        from reelforge.gpu_worker import tasks as gpu_tasks

        gpu_tasks.connect_engine_preload()
    else:
        from celery.signals import worker_ready

        import reelforge.postprocess.tasks  # noqa: F401  (registers the tasks)
        import reelforge.webhooks.tasks  # noqa: F401

        ready_file = settings.ready_file
        if ready_file:
            worker_ready.connect(lambda **_: Path(ready_file).write_text(f"{role}\n"), weak=False)
    celery_app.worker_main([
        "worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=prefork",
        f"--queues={queues or default_queues[role]}", f"--hostname={role}@%h", "--without-gossip",
        "--without-mingle", "--without-heartbeat",
    ])


@main.command()
@click.option("--grpc-port", type=int, default=8001, show_default=True, help="Where GPU workers call it.")
@click.option("--http-port", type=int, default=8010, show_default=True, help="Health and the HTTP API.")
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="Prometheus metrics.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=Path(".reelforge/triton"), show_default=True,
              help="Holds the Python backend folder and the stub's environment.")
def triton(grpc_port: int, http_port: int, metrics_port: int, work_dir: Path) -> None:
    """Run Triton Inference Server with the engine's model repository (REELFORGE_ENGINE_* settings)."""
    import os

    from reelforge.engine.triton.server import TritonNotInstalled, TritonPorts, server_command

    try:
        argv, env = server_command(work_dir.resolve(), TritonPorts(grpc=grpc_port, http=http_port,
                                                                   metrics=metrics_port))
    except TritonNotInstalled as exc:
        raise click.ClickException(str(exc)) from None
    os.execve(argv[0], argv, env)


@main.command()
def relay() -> None:
    """Run the outbox relay: persisted jobs -> Celery GPU queues, due webhook retries -> webhooks queue."""
    from reelforge.logging import configure_logging
    from reelforge.observability.tracing import configure_tracing
    from reelforge.relay.outbox import run
    from reelforge.runtime import get_runtime
    from reelforge.webhooks.tasks import claim_lease_s

    configure_logging()
    stop = _stop_on_signals()
    rt = get_runtime()
    configure_tracing("relay", rt.settings)
    run(rt.redis, rt.publisher, stop, rt.settings.ready_file, _heartbeat(),
        webhooks=(rt.deliveries, claim_lease_s(rt.settings)))


@main.command()
@click.option("--port", type=int, default=None, help="Defaults to REELFORGE_EXPORTER_PORT (9101).")
def exporter(port: int | None) -> None:
    """Serve queue metrics read from Redis: depth and oldest age per queue, outbox, dead letters."""
    from prometheus_client import CollectorRegistry

    from reelforge.logging import configure_logging, get_logger
    from reelforge.observability.metrics import MetricsPortTaken, serve_registry
    from reelforge.observability.queues import QueueCollector
    from reelforge.runtime import redis_client
    from reelforge.settings import get_settings

    configure_logging()
    stop = _stop_on_signals()
    settings = get_settings()
    registry = CollectorRegistry()
    registry.register(QueueCollector(redis_client(settings.celery_broker_url), redis_client(settings.redis_url)))
    try:
        serve_registry(registry, port or settings.exporter_port, "REELFORGE_EXPORTER_PORT")
    except MetricsPortTaken as exc:
        raise click.ClickException(str(exc)) from None
    get_logger("reelforge.exporter").info("exporter_started", port=port or settings.exporter_port)
    if settings.ready_file:
        Path(settings.ready_file).write_text("exporter\n")
    stop.wait()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _heartbeat() -> Heartbeat | None:
    """The heartbeat of this container's process (REELFORGE_HEARTBEAT_FILE), if one is configured."""
    from reelforge.settings import get_settings
    from reelforge.worker_health import Heartbeat

    settings = get_settings()
    if not settings.heartbeat_file:
        return None
    return Heartbeat(Path(settings.heartbeat_file), settings.heartbeat_interval_s)


def _probed_heartbeat() -> Heartbeat:
    heartbeat = _heartbeat()
    if heartbeat is None:
        raise click.ClickException("REELFORGE_HEARTBEAT_FILE is not set, so the worker writes no heartbeat")
    return heartbeat


@main.command("worker-health")
@click.option("--max-age", type=float, default=60.0, show_default=True,
              help="Seconds since the last heartbeat after which the worker counts as stuck.")
@click.option("--require-ready", is_flag=True,
              help="Also require REELFORGE_READY_FILE (startup probe: the GPU worker's engine is loaded).")
@click.option("--pid", type=int, default=1, show_default=True,
              help="The worker's main process (1 in a container); older files are a previous run's.")
def worker_health(max_age: float, require_ready: bool, pid: int) -> None:
    """Probe: exit 0 while this container's worker or relay consumes, 1 when it should be restarted."""
    from reelforge.settings import get_settings
    from reelforge.worker_health import process_started_at, ready_problem

    heartbeat = _probed_heartbeat()
    try:
        since = process_started_at(pid)
    except FileNotFoundError:
        raise click.ClickException(f"no process {pid}") from None
    problem = heartbeat.problem(max_age, since)
    if problem is None and require_ready:
        problem = ready_problem(get_settings().ready_file, since)
    if problem is not None:
        raise click.ClickException(problem)
    click.echo("ok")


@main.command("worker-drain")
@click.option("--pid", type=int, default=1, show_default=True,
              help="The worker's main process (1 in a container).")
@click.option("--timeout", type=float, default=None,
              help="Stop waiting after this many seconds; by default wait until the worker has exited.")
def worker_drain(pid: int, timeout: float | None) -> None:
    """preStop hook: warm-shut the worker down (its running job ends first), probe passing meanwhile."""
    from reelforge.worker_health import drain

    if not drain(_probed_heartbeat(), pid, timeout):
        raise click.ClickException(f"process {pid} still running after {timeout} s")


@main.group()
def keys() -> None:
    """Manage API keys."""


def _registry() -> TenantRegistry:
    from redis import Redis

    from reelforge.core.tenants import TenantRegistry
    from reelforge.settings import get_settings

    return TenantRegistry(Redis.from_url(get_settings().redis_url))


def _audit_key_change(registry: TenantRegistry, tenant: str, action: str, key_id: str) -> None:
    from reelforge.core import audit
    from reelforge.settings import get_settings

    audit.record(registry.redis, audit.entry(tenant, audit.cli_actor(), action, key_id),
                 get_settings().audit_max_entries)


_SCOPE_OPTION = click.option(
    "--scope", "scopes", multiple=True, type=click.Choice(["create", "read", "admin"]),
    help="Repeat for several. create: POST create/cancel/delete; read: GET videos and content; admin: the "
         "audit log. Default: create and read.")


@keys.command("create")
@click.option("--tenant", required=True)
@click.option("--name", default="default")
@_SCOPE_OPTION
def keys_create(tenant: str, name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key for TENANT; the key is printed once and stored only hashed."""
    from reelforge.core.tenants import InvalidTenant

    registry = _registry()
    try:
        key_id, api_key = registry.create_key(tenant, name, scopes)
    except InvalidTenant as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    _audit_key_change(registry, tenant, "api_key.create", key_id)
    info = next(i for i in registry.list_keys(tenant) if i.key_id == key_id)
    click.echo(json.dumps({"tenant": tenant, "key_id": key_id, "api_key": api_key, "scopes": list(info.scopes),
                           "webhook_secret": registry.webhook_secret(tenant)}))


@keys.command("import")
@click.option("--tenant", required=True)
@click.option("--name", default="imported", show_default=True)
@click.option("--api-key", envvar="REELFORGE_IMPORT_API_KEY", required=True, show_envvar=True,
              help="The key to register; prefer the environment variable: a command line is visible to others.")
@_SCOPE_OPTION
def keys_import(tenant: str, name: str, api_key: str, scopes: tuple[str, ...]) -> None:
    """Register an API key made outside reelforge (a Kubernetes Secret) for TENANT; safe to repeat."""
    from reelforge.core.tenants import InvalidKey, InvalidTenant

    registry = _registry()
    try:
        key_id = registry.import_key(tenant, api_key, name, scopes)
    except InvalidTenant as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    except InvalidKey as exc:
        raise click.BadParameter(str(exc), param_hint="--api-key") from None
    click.echo(json.dumps({"tenant": tenant, "key_id": key_id}))


@main.group()
def webhooks() -> None:
    """Manage a tenant's webhooks: signing-secret rotation, disabled endpoints."""


@webhooks.command("rotate-secret")
@click.option("--tenant", required=True)
@click.option("--overlap-hours", type=click.FloatRange(min=0, max=30 * 24), default=24.0, show_default=True,
              help="How long the current secret keeps signing too (every webhook then carries both signatures).")
def webhooks_rotate_secret(tenant: str, overlap_hours: float) -> None:
    """Give TENANT a new webhook signing secret; prints it once."""
    registry = _registry()
    if not registry.tenant_exists(tenant):
        raise click.BadParameter(f"no tenant {tenant!r}; create it with `reelforge keys create --tenant`",
                                 param_hint="--tenant")
    secret, previous_until = registry.rotate_webhook_secret(tenant, overlap_hours * 3600)
    click.echo(json.dumps({"tenant": tenant, "webhook_secret": secret,
                           "previous_secret_valid_until": previous_until if overlap_hours > 0 else None}))


@webhooks.command("enable-endpoint")
@click.option("--tenant", required=True)
@click.option("--url", required=True, help="The webhook URL that answered 410 Gone.")
def webhooks_enable_endpoint(tenant: str, url: str) -> None:
    """Send TENANT's events to URL again after it answered 410 Gone (replay the skipped ones after)."""
    from reelforge.core.deliveries import DeliveryStore
    from reelforge.settings import get_settings

    settings = get_settings()
    deliveries = DeliveryStore(_registry().redis, settings.asset_ttl_s)
    if not deliveries.enable_endpoint(tenant, url):
        raise click.BadParameter(f"{url} is not disabled for tenant {tenant!r}", param_hint="--url")
    click.echo(json.dumps({"tenant": tenant, "url": url, "disabled": False}))



def _when(ms: int | None) -> str:
    import datetime

    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key instead of a table.")
def keys_list(tenant: str | None, as_json: bool) -> None:
    """List API keys (never their secrets): id, tenant, name, scopes, created, revoked, last used."""
    from dataclasses import asdict

    rows = _registry().list_keys(tenant)
    if as_json:
        for info in rows:
            click.echo(json.dumps(asdict(info)))
        return
    table = [("KEY ID", "TENANT", "NAME", "SCOPES", "CREATED", "REVOKED", "LAST USED")]
    table += [(i.key_id, i.tenant, i.name, ",".join(i.scopes), _when(i.created_at), _when(i.revoked_at),
               _when(i.last_used_at)) for i in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke KEY_ID: every gateway refuses it (401) from its next request on."""
    from reelforge.core.tenants import UnknownKey

    registry = _registry()
    try:
        info, newly = registry.revoke(key_id)
    except UnknownKey as exc:
        raise click.ClickException(str(exc)) from None
    if newly:
        _audit_key_change(registry, info.tenant, "api_key.revoke", key_id)
    click.echo(json.dumps({"key_id": key_id, "tenant": info.tenant, "revoked": True,
                           "revoked_at": _when(info.revoked_at), "already_revoked": not newly}))


@main.command()
@click.option("--tenant", required=True)
@click.option("--rate", type=click.FloatRange(min=0), default=None,
              help="Creates per second (token refill); 0 turns the rate limit off for the tenant.")
@click.option("--burst", type=click.IntRange(min=1), default=None, help="Creates at once (bucket size).")
@click.option("--max-concurrent", type=click.IntRange(min=0), default=None,
              help="Jobs queued or running at once; 0 turns the quota off for the tenant.")
@click.option("--reset", is_flag=True, help="Drop the tenant's overrides: the REELFORGE_* settings apply.")
def limits(tenant: str, rate: float | None, burst: int | None, max_concurrent: int | None, reset: bool) -> None:
    """Show or override one tenant's rate limit and concurrent-job quota (effective at once)."""
    from reelforge.core.tenants import LIMIT_FIELDS, InvalidTenant
    from reelforge.settings import get_settings

    registry = _registry()
    changes: dict[str, float | None] = dict.fromkeys(LIMIT_FIELDS) if reset else {}
    given = {"rate_per_s": rate, "burst": burst, "max_concurrent_jobs": max_concurrent}
    changes.update({field: value for field, value in given.items() if value is not None})
    try:
        overrides = registry.set_limits(tenant, changes) if changes else registry.limit_overrides(tenant)
    except InvalidTenant as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    settings = get_settings()
    effective = {"rate_per_s": float(overrides.get("rate_per_s", settings.rate_limit_per_s)),
                 "burst": int(overrides.get("burst", settings.rate_limit_burst)),
                 "max_concurrent_jobs": int(overrides.get("max_concurrent_jobs", settings.max_concurrent_jobs))}
    click.echo(json.dumps({"tenant": tenant, "overrides": overrides, "effective": effective}))


@main.command("audit")
@click.option("--tenant", default=None, help="Only this tenant's entries (default: every tenant's).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def audit_log(tenant: str | None, limit: int) -> None:
    """Print the newest audit log entries, newest first, one JSON object per line."""
    from reelforge.core import audit

    for item in audit.read(_registry().redis, tenant, limit):
        click.echo(json.dumps(item))


@main.command("storage-init")
def storage_init() -> None:
    """Create the object storage bucket (REELFORGE_S3_BUCKET) if it is missing; safe to repeat."""
    from reelforge.runtime import build_storage
    from reelforge.settings import get_settings

    settings = get_settings()
    build_storage(settings).ensure_bucket()
    click.echo(json.dumps({"bucket": settings.s3_bucket}))


@main.command()
@click.argument("prompt", default=EXAMPLE_PROMPT)
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True,
              help="The stack to use (reads its gateway URL and dev key).")
@click.option("--size", default=None)
@click.option("--seconds", default=None)
@click.option("--seed", type=int, default=None)
@click.option("--steps", type=int, default=None)
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Where to write the MP4.")
def generate(prompt: str, data_dir: Path, size: str | None, seconds: str | None, seed: int | None,
             steps: int | None, output: Path | None) -> None:
    """Submit PROMPT to a running stack, show progress, download the MP4."""
    from reelforge.devstack.client import GenerateError, generate_video, load_stack_info

    info = load_stack_info(data_dir.resolve())
    if info is None:
        raise click.ClickException(f"no running stack under {data_dir}; start one with `reelforge up --detach`")
    try:
        path, url = generate_video(info, prompt, size=size, seconds=seconds, seed=seed, steps=steps,
                                   output=output or data_dir.resolve() / "outputs")
    except GenerateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"mp4 path: {path}")
    click.echo(f"mp4 url:  {url}  (with header 'Authorization: Bearer <api key>')")


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR / "demo",
              show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.argument("prompt", default=EXAMPLE_PROMPT)
@click.pass_context
def demo(ctx: click.Context, data_dir: Path, port: int, prompt: str) -> None:
    """Start the stack (detached), generate one video, print where it is."""
    from reelforge.devstack.client import load_stack_info

    if load_stack_info(data_dir.resolve()) is None:
        ctx.invoke(up, data_dir=data_dir, port=port, redis_port=0, s3_port=0, detach=True)
    ctx.invoke(generate, prompt=prompt, data_dir=data_dir, size=None, seconds=None, seed=None, steps=None,
               output=None)
    click.echo(f"the stack keeps running; stop it with: reelforge down --data-dir {data_dir}")


def _attach_model_commands() -> None:
    from reelforge.provenance.cli import provenance
    from reelforge.training.cli import model

    main.add_command(model)
    main.add_command(provenance)


_attach_model_commands()


if __name__ == "__main__":
    sys.exit(main())
