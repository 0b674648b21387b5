"""Outbox relay: moves jobs the gateway persisted onto the Celery GPU queues."""
