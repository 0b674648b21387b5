"""deploy/: the one-GPU-host docker-compose file, its Prometheus config and Grafana provisioning. No Docker
engine runs here, so the file is checked, not run: pinned images, real reelforge commands and Dockerfile
targets, grace periods, Redis durability, and a scrape job for every service that serves metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from reelforge.celery_app import create_celery
from reelforge.settings import Settings
from tests.cli_args import assert_cli_accepts
from tests.deploy.chart import ROOT
from tests.unit.test_dockerfile import dockerfile_stages

DEPLOY = ROOT / "deploy"
# Services with no metrics endpoint of their own: Redis is scraped through redis-exporter, the relay serves
# none, the init steps exit.
NOT_SCRAPED = {"redis", "relay", "storage-init", "bootstrap-key"}
# Metrics ports of the third-party images (their documented defaults); reelforge's follow from the commands.
THIRD_PARTY_METRICS_PORTS = {"redis-exporter": 9121, "prometheus": 9090, "grafana": 3000}


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return compose


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _is_reelforge(service: dict[str, Any]) -> bool:
    return str(service["image"]).startswith("reelforge/")


def _metrics_port(name: str, service: dict[str, Any]) -> int:
    command = service.get("command") or []
    if name in THIRD_PARTY_METRICS_PORTS:
        return THIRD_PARTY_METRICS_PORTS[name]
    if name == "seaweedfs":
        return int(next(arg for arg in command if arg.startswith("-metricsPort=")).split("=")[1])
    if command[0] == "gateway":
        return int(command[command.index("--port") + 1])
    if command[0] == "worker":
        return int(service["environment"]["REELFORGE_METRICS_PORT"])
    assert command[0] == "exporter", f"{name}: no known metrics port"
    return 9101  # the exporter's port, fixed by the observability contract


def _scrape_targets() -> set[str]:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    return {target for job in config["scrape_configs"] for static in job["static_configs"]
            for target in static["targets"]}


def test_every_image_is_pinned_and_every_build_target_exists() -> None:
    stages = dockerfile_stages()
    for name, service in _services().items():
        image = service["image"]
        assert re.search(r":v?\d+\.\d+", image), f"{name}: image {image!r} is not pinned to a version"
        if "build" in service:
            assert service["build"]["target"] in stages, f"{name}: no Dockerfile target {service['build']['target']}"


def test_reelforge_services_run_real_commands_locked_down() -> None:
    for name, service in _services().items():
        if not _is_reelforge(service):
            continue
        assert_cli_accepts([re.sub(r"\$\{[^}]+\}", "default", arg) for arg in service["command"]],
                           service["environment"])
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["environment"]["REELFORGE_ENVIRONMENT"] == "production", name
        assert "${S3_SECRET_ACCESS_KEY" in service["environment"]["REELFORGE_S3_SECRET_ACCESS_KEY"], name


def test_workers_outlast_the_task_hard_time_limit_and_gpus_get_one_process_each() -> None:
    workers = {name: s for name, s in _services().items() if _is_reelforge(s) and s["command"][0] == "worker"}
    assert {s["command"][1] for s in workers.values()} == {"gpu", "postprocess", "webhooks"}
    for name, service in workers.items():
        settings = Settings(environment="development",
                            gpu_task_time_limit_s=service["environment"]["REELFORGE_GPU_TASK_TIME_LIMIT_S"])
        limit = create_celery(settings).conf.task_time_limit
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace > limit, f"{name}: {grace} s grace would kill a job at its {limit} s limit"
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if service["command"][1] == "gpu":
            (device,) = devices
            assert len(device["device_ids"]) == 1 and service["command"][-2:] == ["--concurrency", "1"]
        else:
            assert not devices, f"{name} reserves a GPU"


def test_redis_keeps_every_job_and_message() -> None:
    command = _services()["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_prometheus_scrapes_every_service_that_serves_metrics() -> None:
    services = _services()
    expected = {f"{name}:{_metrics_port(name, s)}" for name, s in services.items() if name not in NOT_SCRAPED}
    expected = {"localhost:9090" if t == "prometheus:9090" else t for t in expected}  # Prometheus scrapes itself
    assert _scrape_targets() == expected
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in mounts
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(["promtool", "check", "config", "--syntax-only", str(DEPLOY / "prometheus/prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_the_prometheus_service_and_deploy_dashboards() -> None:
    services = _services()
    mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = DEPLOY / "grafana/provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    (provider,) = yaml.safe_load((provisioning / "dashboards/reelforge.yml").read_text())["providers"]
    assert provider["options"]["path"] == mounts["./grafana/dashboards"]
