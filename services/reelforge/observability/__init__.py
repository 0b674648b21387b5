"""Metrics (prometheus-client), traces (OpenTelemetry) and the queue exporter; docs/metrics.md lists every metric."""
