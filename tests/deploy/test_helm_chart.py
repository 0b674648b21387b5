"""helm/reelforge, rendered with Helm's engine for the default values and the value sets operators use,
linted, validated against the Kubernetes API schemas, and held to the deployment invariants for every
container of every set. No cluster exists here: nothing is installed."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from reelforge.celery_app import create_celery
from reelforge.settings import Settings
from tests.cli_args import assert_cli_accepts
from tests.deploy.chart import CHART, Manifest, containers, env_of, named, notes, of_kind, render, workloads

KUBE_VERSIONS = ("1.27.0", "1.37.0")  # Chart.yaml's kubeVersion floor and the newest schemas we have
EXTERNAL_REDIS = {"bundled": False, "external": {"url": "redis://redis.example:6379/0",
                                                 "brokerUrl": "redis://redis.example:6379/1"}}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cpu-only, fixed replicas, external redis": {
        "workers": {"gpu": {"gpu": {"enabled": False}}}, "keda": {"enabled": False}, "redis": EXTERNAL_REDIS,
        "gateway": {"autoscaling": {"enabled": False}},
    },
    "scale to zero, triton, ingress, inline storage secret, long jobs": {
        "keda": {"minReplicaCount": 0, "activationThreshold": "1"},
        "triton": {"enabled": True},
        "gateway": {"ingress": {"enabled": True, "className": "nginx",
                                "tls": [{"hosts": ["reelforge.example.com"], "secretName": "tls"}]},
                    "autoscaling": {"requestsPerSecond": {"enabled": True}}},
        "objectStorage": {"existingSecret": "", "endpointUrl": "https://s3.example.com",
                          "accessKeyId": "AKIA", "secretAccessKey": "not-the-dev-default"},
        "settings": {"gpuTaskTimeLimitSeconds": 1800},
    },
    "no monitoring CRDs, existing secrets, no bootstrap key": {
        "metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}},
        "exporter": {"enabled": False}, "keda": {"enabled": False},
        "apiKeyBootstrap": {"enabled": False}, "redis": {"existingPasswordSecret": "my-redis"},
    },
}
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
REELFORGE_IMAGES = ("reelforge/gateway:", "reelforge/worker-cpu:", "reelforge/worker-gpu:")


@pytest.fixture(scope="module", params=list(VALUE_SETS), ids=list(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[Manifest]]:
    values = VALUE_SETS[request.param]
    return values, render(values)


def _is_reelforge(container: Manifest) -> bool:
    return str(container["image"]).startswith(REELFORGE_IMAGES)


def _time_limit(container: Manifest) -> int:
    """The Celery hard time limit this container's workers run with: its env, else the settings default."""
    env = env_of(container).get("REELFORGE_GPU_TASK_TIME_LIMIT_S")
    settings = Settings(environment="development", **({"gpu_task_time_limit_s": env["value"]} if env else {}))
    limit = create_celery(settings).conf.task_time_limit
    assert isinstance(limit, int)
    return limit


def test_lint_reports_no_warning_for_any_value_set() -> None:
    for name, values in VALUE_SETS.items():
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"{name}: {problems}"


def test_every_builtin_object_validates_against_the_kubernetes_schemas(value_set: tuple[Any, list[Manifest]]) -> None:
    _, manifests = value_set
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            continue  # no published schema here; their fields are asserted in the tests below
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_every_object_carries_the_standard_labels(value_set: tuple[Any, list[Manifest]]) -> None:
    _, manifests = value_set
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"):
            assert key in labels, f"{manifest['kind']} {manifest['metadata']['name']} lacks label {key}"
    for workload in workloads(manifests):
        selector = workload["spec"]["selector"]["matchLabels"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items() and "app.kubernetes.io/component" in selector


def test_every_container_has_resources_and_the_restricted_security_context(
        value_set: tuple[Any, list[Manifest]]) -> None:
    _, manifests = value_set
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), name
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES, f"{name}: volume {volume}"
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add"), where
            assert security["runAsNonRoot"] is True and not security.get("privileged"), where
            assert security["seccompProfile"]["type"] == "RuntimeDefault", where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where


def test_every_container_has_probes_and_a_prestop_and_reelforge_commands_exist(
        value_set: tuple[Any, list[Manifest]]) -> None:
    _, manifests = value_set
    for workload in workloads(manifests):
        for container in containers(workload, init=False):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{where} has no {probe}"
            if container["name"] == "redis":  # Redis flushes its AOF on SIGTERM itself; a hook adds nothing
                assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
                continue
            assert "preStop" in container.get("lifecycle", {}), f"{where} has no preStop"
        for container in containers(workload):
            if not _is_reelforge(container):
                continue
            assert_cli_accepts(container["args"], env_of(container))
            hooks = [container.get(p, {}).get("exec") for p in ("startupProbe", "livenessProbe", "readinessProbe")]
            hooks.append(container.get("lifecycle", {}).get("preStop", {}).get("exec"))
            for hook in filter(None, hooks):
                if hook["command"][0] == "reelforge":
                    assert_cli_accepts(hook["command"][1:])


def test_worker_liveness_checks_the_consumer_heartbeat_and_prestop_drains(
        value_set: tuple[Any, list[Manifest]]) -> None:
    _, manifests = value_set
    for role in ("gpu", "postprocess", "webhooks"):
        (worker,) = containers(named(manifests, "Deployment", f"worker-{role}"))
        assert worker["livenessProbe"]["exec"]["command"][:2] == ["reelforge", "worker-health"]
        assert "--require-ready" in worker["startupProbe"]["exec"]["command"]
        assert worker["lifecycle"]["preStop"]["exec"]["command"] == ["reelforge", "worker-drain"]
        env = env_of(worker)
        assert env["REELFORGE_HEARTBEAT_FILE"]["value"].startswith("/run/reelforge/")
        mounts = {m["mountPath"] for m in worker["volumeMounts"]}
        assert {"/run/reelforge", "/tmp"} <= mounts


def test_worker_grace_period_outlasts_the_task_hard_time_limit(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    for role in ("gpu", "postprocess", "webhooks"):
        deployment = named(manifests, "Deployment", f"worker-{role}")
        (worker,) = containers(deployment)
        limit = _time_limit(worker)
        assert limit == values.get("settings", {}).get("gpuTaskTimeLimitSeconds", Settings.model_fields[
            "gpu_task_time_limit_s"].default)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > limit, f"worker-{role}: grace {grace} s would kill a job at its {limit} s limit"


def test_one_worker_process_per_gpu_and_no_gpu_elsewhere(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    gpu_on = values.get("workers", {}).get("gpu", {}).get("gpu", {}).get("enabled", True)
    (worker,) = containers(named(manifests, "Deployment", "worker-gpu"))
    args = worker["args"]
    assert args[:2] == ["worker", "gpu"] and args[args.index("--concurrency") + 1] == "1"
    assert env_of(worker)["REELFORGE_ENGINE_DEVICE"]["value"] == ("cuda" if gpu_on else "cpu")
    assert worker["resources"]["limits"].get("nvidia.com/gpu") == (1 if gpu_on else None)
    assert worker["image"].startswith("reelforge/worker-gpu:" if gpu_on else "reelforge/worker-cpu:")
    for workload in workloads(manifests):
        if workload["metadata"]["name"].endswith(("worker-gpu", "triton")):
            continue
        for container in containers(workload):
            assert "nvidia.com/gpu" not in container["resources"]["limits"], workload["metadata"]["name"]


def test_gpu_workers_scale_on_queue_backlog_through_keda(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    keda = {"enabled": True, "minReplicaCount": 1, "activationThreshold": "0", **values.get("keda", {})}
    deployment = named(manifests, "Deployment", "worker-gpu")
    scaled = of_kind(manifests, "ScaledObject")
    if not keda["enabled"]:
        assert not scaled and deployment["spec"]["replicas"] >= 1
        return
    (scaled_object,) = scaled
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count; the Deployment must not set it"
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["minReplicaCount"] == keda["minReplicaCount"] and spec["maxReplicaCount"] >= 1
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    query = re.sub(r"\s+", " ", meta["query"])
    assert 'sum(reelforge_queue_depth{queue=~"gpu-interactive|gpu-batch"}) or vector(0)' in query
    assert 'sum(reelforge_jobs_in_flight{stage="gpu"}) or vector(0)' in query and ") + (" in query
    assert meta["activationThreshold"] == keda["activationThreshold"] and float(meta["threshold"]) > 0
    assert meta["serverAddress"].startswith("http")


def test_redis_is_bundled_with_aof_and_noeviction_or_external(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    bundled = values.get("redis", {}).get("bundled", True)
    statefulsets = of_kind(manifests, "StatefulSet")
    reelforge_containers = [c for w in workloads(manifests) for c in containers(w) if _is_reelforge(c)]
    if not bundled:
        assert not statefulsets
        for container in reelforge_containers:
            for var in ("REELFORGE_REDIS_URL", "REELFORGE_BROKER_URL"):
                assert "secretKeyRef" in env_of(container)[var]["valueFrom"]
        return
    (redis,) = containers(named(manifests, "StatefulSet", "redis"))
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in args and "--requirepass" in args
    password_secret = values.get("redis", {}).get("existingPasswordSecret") or "rf-reelforge-redis"
    for container in reelforge_containers:
        env = env_of(container)
        assert env["REELFORGE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == password_secret
        assert env["REELFORGE_REDIS_URL"]["value"].endswith("@rf-reelforge-redis:6379/0")
        assert env["REELFORGE_BROKER_URL"]["value"].endswith("@rf-reelforge-redis:6379/1")


def test_storage_credentials_and_the_bootstrap_key_come_from_secrets(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    secrets = {m["metadata"]["name"]: m for m in of_kind(manifests, "Secret")}
    storage_secret = values.get("objectStorage", {}).get("existingSecret", "reelforge-object-storage") \
        or "rf-reelforge-object-storage"
    assert (storage_secret in secrets) == (storage_secret == "rf-reelforge-object-storage")
    for workload in workloads(manifests):
        for container in filter(_is_reelforge, containers(workload)):
            env = env_of(container)
            assert env["REELFORGE_ENVIRONMENT"]["value"] == "production"
            for var in ("REELFORGE_S3_ENDPOINT_URL", "REELFORGE_S3_ACCESS_KEY_ID", "REELFORGE_S3_SECRET_ACCESS_KEY"):
                assert env[var]["valueFrom"]["secretKeyRef"]["name"] == storage_secret, var
    gateway = named(manifests, "Deployment", "gateway")["spec"]["template"]["spec"]
    if not values.get("apiKeyBootstrap", {}).get("enabled", True):
        assert "initContainers" not in gateway
        return
    (importer,) = gateway["initContainers"]
    assert importer["args"][:2] == ["keys", "import"]
    key_ref = env_of(importer)["REELFORGE_IMPORT_API_KEY"]["valueFrom"]["secretKeyRef"]
    generated = secrets[key_ref["name"]]
    assert generated["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert re.fullmatch(r"rf_[A-Za-z0-9]{43}", __import__("base64").b64decode(generated["data"][key_ref["key"]]).decode())


def test_scaled_deployments_have_disruption_budgets(value_set: tuple[Any, list[Manifest]]) -> None:
    _, manifests = value_set
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for suffix in ("gateway", "worker-gpu", "worker-postprocess", "worker-webhooks"):
        pod_labels = named(manifests, "Deployment", suffix)["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()]
        assert len(matching) == 1, f"{suffix}: {len(matching)} PodDisruptionBudgets select it"
        assert matching[0]["spec"]["maxUnavailable"] >= 1  # never 0: that would block every node drain


def test_singletons_never_run_twice(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    for suffix in ("relay", "exporter") if values.get("exporter", {}).get("enabled", True) else ("relay",):
        spec = named(manifests, "Deployment", suffix)["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"


def test_every_scrape_target_names_a_port_of_its_service(value_set: tuple[Any, list[Manifest]]) -> None:
    values, manifests = value_set
    monitors = of_kind(manifests, "ServiceMonitor")
    if not values.get("metrics", {}).get("serviceMonitor", {}).get("enabled", True):
        assert not monitors
        return
    services = of_kind(manifests, "Service")
    scraped = set()
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert all(e["port"] in ports for e in monitor["spec"]["endpoints"]), monitor["metadata"]["name"]
        scraped.add(selector["app.kubernetes.io/component"])
    assert {"gateway", "worker-gpu", "worker-postprocess", "worker-webhooks"} <= scraped
    (worker,) = containers(named(manifests, "Deployment", "worker-gpu"))
    assert env_of(worker)["REELFORGE_METRICS_PORT"]["value"] == "9100"


def test_ingress_routes_to_the_gateway_service() -> None:
    manifests = render(VALUE_SETS["scale to zero, triton, ingress, inline storage secret, long jobs"])
    (ingress,) = of_kind(manifests, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = named(manifests, "Service", "gateway")
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_values_schema_refuses_unsafe_or_malformed_values() -> None:
    chart = helm.Chart.load(CHART)
    chart.validate_schema({})
    for bad in ({"keda": {"minReplicaCount": -1}}, {"redis": {"bundled": "yes"}}, {"typo": 1},
                {"containerSecurityContext": {"allowPrivilegeEscalation": True}},
                {"podSecurityContext": {"runAsNonRoot": False}},
                {"settings": {"environment": "staging"}}, {"keda": {"serverAddress": "prometheus:9090"}},
                {"settings": {"extraEnv": {"PATH": "/tmp"}}}, {"apiKeyBootstrap": {"tenant": "Not Valid"}}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_missing_required_values_fail_with_a_message_that_says_what_to_set() -> None:
    with pytest.raises(helm.HelmError, match="redis.external.url is required"):
        render({"redis": {"bundled": False}})
    with pytest.raises(helm.HelmError, match="objectStorage.endpointUrl is required"):
        render({"objectStorage": {"existingSecret": ""}})


def test_notes_tell_how_to_reach_the_api_and_read_the_key() -> None:
    text = notes({})
    assert "port-forward svc/rf-reelforge-gateway" in text
    assert "get secret rf-reelforge-api-key" in text and "create secret generic reelforge-object-storage" in text
