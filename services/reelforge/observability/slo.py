"""Service-level objectives: the thresholds the histograms are bucketed on and the rules are built from.

deploy/prometheus/rules/slo.yml is generated from these (scripts/observability_assets.py); a test fails
when the committed rules, the histogram buckets or docs/metrics.md disagree with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelforge.core.contracts import Priority

# Seconds from creation to completion within which a job meets its tier's objective. Interactive jobs
# are served first (the GPU worker polls gpu-interactive before gpu-batch); batch jobs may wait.
E2E_LATENCY_S: dict[Priority, float] = {Priority.interactive: 60.0, Priority.batch: 900.0}
# Seconds from creation to the first denoising progress a client can see.
FIRST_PROGRESS_S: dict[Priority, float] = {Priority.interactive: 10.0, Priority.batch: 300.0}


@dataclass(frozen=True)
class Objective:
    name: str  # the `slo` label of the recorded ratios and of the alerts
    target: float  # share of good events over the SLO period
    description: str

    @property
    def error_budget(self) -> float:
        return 1.0 - self.target


OBJECTIVES = (
    Objective("job_success", 0.99, "finished jobs that completed rather than failed (cancellations excluded)"),
    Objective("job_latency", 0.99, "completed jobs that finished within their tier's end-to-end threshold"),
    Objective("first_progress", 0.99, "jobs whose first denoising step was reported within their tier's threshold"),
    Objective("api_availability", 0.999, "gateway API requests answered without a 5xx (probes and scrapes excluded)"),
)
