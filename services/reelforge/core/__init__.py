"""Shared core: catalog of models, job contracts and state machine, Redis job store, object storage."""
