"""What a worker does when a dependency fails: object storage calls retried for a time budget, and which
Redis errors mean "the store is unavailable, put the message back" rather than a bug."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.exceptions import ConnectionError, OutOfMemoryError, ResponseError, TimeoutError

from reelforge.core import storage
from reelforge.core.storage import ObjectNotFound, StorageError, retrying
from reelforge.core.store import out_of_memory, store_unavailable


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []
    monkeypatch.setattr(storage.time, "sleep", pauses.append)
    return pauses


def failing(times: int, error: Exception) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return calls, call


def test_storage_calls_are_retried_with_backoff_until_they_succeed(no_sleep: list[float]) -> None:
    calls, call = failing(4, StorageError("connection refused"))
    waited: list[int] = []
    assert retrying(call, budget_s=120, while_waiting=lambda: waited.append(1)) == "ok"
    assert len(calls) == 5 and len(waited) == 4
    assert no_sleep == [0.5, 1.0, 2.0, 4.0]


def test_storage_retries_stop_at_the_budget_and_a_missing_object_is_final() -> None:
    calls, call = failing(100, StorageError("connection refused"))
    with pytest.raises(StorageError):
        retrying(call, budget_s=0)
    assert len(calls) == 1
    calls, call = failing(100, ObjectNotFound("a/b"))
    with pytest.raises(ObjectNotFound):
        retrying(call, budget_s=120)
    assert len(calls) == 1


@pytest.mark.parametrize(("error", "full", "unavailable"), [
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True, True),
    # what a write inside a Lua script (the create path, every job transition) answers at maxmemory
    (ResponseError("Error running script (call to f_1): @user_script:7: OOM command not allowed when used "
                   "memory > 'maxmemory'."), True, True),
    (ConnectionError("Connection refused"), False, True),
    (TimeoutError("Timeout reading from socket"), False, True),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False, False),
])
def test_redis_errors_that_mean_the_store_is_unavailable(error: ResponseError, full: bool, unavailable: bool) -> None:
    assert out_of_memory(error) is full
    assert store_unavailable(error) is unavailable
