"""Deterministic storage keys and the staged-frames format (no object store needed)."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from reelforge.core.storage import asset_key, frames_from_bytes, frames_to_bytes, job_prefix, staging_key


def test_keys_are_deterministic_per_tenant_and_job() -> None:
    assert job_prefix("acme", "video_1") == "acme/video_1/"
    assert asset_key("acme", "video_1", "video.mp4") == "acme/video_1/video.mp4"
    assert staging_key("acme", "video_1") == "acme/video_1/staging/frames.npy"
    assert staging_key("acme", "video_1") == staging_key("acme", "video_1")


def test_job_prefix_of_one_job_does_not_cover_another() -> None:
    assert not asset_key("acme", "video_10", "video.mp4").startswith(job_prefix("acme", "video_1"))


@pytest.mark.parametrize(
    ("tenant", "job_id"), [("", "v"), ("a/b", "v"), ("acme", ""), ("acme", ".."), (".", "v")]
)
def test_key_segments_cannot_escape_their_job(tenant: str, job_id: str) -> None:
    with pytest.raises(ValueError, match="key segment"):
        asset_key(tenant, job_id, "video.mp4")


@pytest.mark.parametrize("name", ["", "/etc/passwd"])
def test_asset_names_are_relative(name: str) -> None:
    with pytest.raises(ValueError, match="asset name"):
        asset_key("acme", "video_1", name)


def test_frames_round_trip_exactly() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 8, 16, 3), dtype=np.uint8)
    restored = frames_from_bytes(frames_to_bytes(frames))
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, frames)


def _npy(array: npt.NDArray[Any], allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_pickled_payloads_are_refused() -> None:
    object_array = np.array([{"evil": True}], dtype=object)
    with pytest.raises(ValueError, match="plain .npy"):
        frames_from_bytes(_npy(object_array, allow_pickle=True))
    with pytest.raises(ValueError, match="plain .npy"):
        frames_from_bytes(pickle.dumps(np.zeros((1, 2, 2, 3), dtype=np.uint8)))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 2, 2, 3), dtype=np.float32),
        np.zeros((2, 2, 3), dtype=np.uint8),
        np.zeros((1, 2, 2, 4), np.uint8),
    ],
    ids=["float32", "3-d", "rgba"],
)
def test_wrong_dtype_or_shape_is_refused_both_ways(array: npt.NDArray[Any]) -> None:
    with pytest.raises(ValueError, match="frames must"):
        frames_to_bytes(array)
    with pytest.raises(ValueError, match="frames must"):
        frames_from_bytes(_npy(array))


@pytest.mark.parametrize("data", [b"", b"not an npy file at all"], ids=["empty", "garbage"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        frames_from_bytes(data)


def test_npz_archives_are_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, frames=np.zeros((1, 2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="frames must"):
        frames_from_bytes(buffer.getvalue())
