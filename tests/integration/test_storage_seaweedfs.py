"""ObjectStore against a real SeaweedFS started by devstack on free ports in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reelforge.core.storage import ObjectNotFound, ObjectStore, StorageError, asset_key, job_prefix
from reelforge.devstack.processes import (
    SEAWEEDFS_STOP_TIMEOUT_S,
    ManagedProcess,
    free_port,
    start_seaweedfs,
)

pytestmark = pytest.mark.integration

ACCESS_KEY, SECRET_KEY, BUCKET = "reelforge-test", "reelforge-test-secret", "reelforge-test"


@dataclass
class Seaweed:
    process: ManagedProcess
    endpoint: str
    s3_port: int

    def store(self, secret: str = SECRET_KEY, public_endpoint: str | None = None) -> ObjectStore:
        return ObjectStore(self.endpoint, BUCKET, ACCESS_KEY, secret, public_endpoint_url=public_endpoint)


def start(data_dir: Path) -> Seaweed:
    s3_port, master_port, volume_port, filer_port = (free_port() for _ in range(4))
    process = start_seaweedfs(data_dir, s3_port, master_port, volume_port, filer_port, ACCESS_KEY, SECRET_KEY)
    seaweed = Seaweed(process, f"http://127.0.0.1:{s3_port}", s3_port)
    seaweed.store().ensure_bucket()
    return seaweed


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    running = start(tmp_path_factory.mktemp("seaweedfs"))
    yield running
    running.process.stop()


@pytest.fixture()
def store(seaweed: Seaweed) -> ObjectStore:
    return seaweed.store()


def test_bytes_round_trip_and_overwrite(store: ObjectStore) -> None:
    key = asset_key("acme", "video_rt", "video.mp4")
    store.put_bytes(key, b"first", "video/mp4")
    store.put_bytes(key, b"second", "video/mp4")  # a re-run overwrites the same deterministic key
    assert store.get_bytes(key) == b"second"
    assert store.exists(key)


def test_file_streams_back_in_chunks_with_length_and_type(store: ObjectStore, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1200  # 300 KiB: several stream chunks
    path = tmp_path / "thumb.webp"
    path.write_bytes(payload)
    key = asset_key("acme", "video_stream", "thumbnail.webp")
    store.put_file(key, path, "image/webp")
    stream = store.open_stream(key)
    chunks = list(stream.chunks)
    assert len(chunks) > 1
    assert b"".join(chunks) == payload
    assert (stream.content_length, stream.content_type) == (len(payload), "image/webp")


def test_missing_objects(store: ObjectStore) -> None:
    key = asset_key("acme", "video_none", "video.mp4")
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(key)
    with pytest.raises(ObjectNotFound):
        store.open_stream(key)


def test_delete_prefix_removes_one_job_only(store: ObjectStore) -> None:
    for job in ("video_1", "video_10"):
        for name in ("video.mp4", "thumbnail.webp", "staging/frames.npy"):
            store.put_bytes(asset_key("acme", job, name), b"x", "application/octet-stream")
    assert store.delete_prefix(job_prefix("acme", "video_1")) == 3
    assert not store.exists(asset_key("acme", "video_1", "video.mp4"))
    assert store.exists(asset_key("acme", "video_10", "video.mp4"))
    assert store.delete_prefix(job_prefix("acme", "video_1")) == 0
    with pytest.raises(ValueError, match="empty prefix"):
        store.delete_prefix("")


def test_ensure_bucket_is_idempotent_and_ping_answers(store: ObjectStore) -> None:
    store.ensure_bucket()
    store.ping()


def test_presigned_url_serves_the_object_to_a_plain_http_client(seaweed: Seaweed) -> None:
    # Signed for "localhost", a different host than the internal endpoint, as a public endpoint would be.
    public = f"http://localhost:{seaweed.s3_port}"
    store = seaweed.store(public_endpoint=public)
    key = asset_key("acme", "video_url", "video.mp4")
    store.put_bytes(key, b"movie bytes", "video/mp4")
    url = store.presigned_get_url(key, expires_s=60)
    assert url.startswith(f"{public}/{BUCKET}/")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"movie bytes"
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403
    assert httpx.get(f"{seaweed.endpoint}/{BUCKET}/{key}").status_code == 403  # anonymous


def test_presigned_url_expires(store: ObjectStore) -> None:
    key = asset_key("acme", "video_exp", "video.mp4")
    store.put_bytes(key, b"short-lived", "video/mp4")
    url = store.presigned_get_url(key, expires_s=1)
    time.sleep(2.1)
    assert httpx.get(url).status_code == 403
    with pytest.raises(ValueError, match="expires_s"):
        store.presigned_get_url(key, expires_s=8 * 24 * 3600)


def test_wrong_credentials_are_refused(seaweed: Seaweed) -> None:
    with pytest.raises(StorageError, match="refused") as raised:
        seaweed.store(secret="not-the-secret").put_bytes("acme/x/y", b"x", "text/plain")
    assert not isinstance(raised.value, ObjectNotFound)
    intruder = ObjectStore(seaweed.endpoint, BUCKET, "someone-else", SECRET_KEY)
    with pytest.raises(StorageError, match="refused"):
        intruder.get_bytes("acme/x/y")


def test_ping_fails_fast_on_a_missing_bucket(seaweed: Seaweed) -> None:
    missing = ObjectStore(seaweed.endpoint, "no-such-bucket", ACCESS_KEY, SECRET_KEY)
    with pytest.raises(StorageError, match="does not exist"):
        missing.ping()


def test_second_stack_side_by_side_then_stopped(seaweed: Seaweed, tmp_path: Path) -> None:
    """A second SeaweedFS runs next to the module's one (no port clash), and once stopped ping fails."""
    other = start(tmp_path / "other")
    store = other.store()
    store.put_bytes("acme/v/video.mp4", b"other", "video/mp4")
    assert store.get_bytes("acme/v/video.mp4") == b"other"
    assert not seaweed.store().exists("acme/v/video.mp4")

    started = time.monotonic()
    other.process.stop()
    assert time.monotonic() - started < SEAWEEDFS_STOP_TIMEOUT_S + 3
    assert not other.process.alive
    started = time.monotonic()
    with pytest.raises(StorageError):
        store.ping()
    assert time.monotonic() - started < 5  # /readyz must not hang on a dead store
    assert "S3 API Server" in other.process.log_tail(200)


def test_storage_init_creates_the_bucket_once(seaweed: Seaweed) -> None:
    env = {**os.environ, "REELFORGE_ENVIRONMENT": "development", "REELFORGE_S3_ENDPOINT_URL": seaweed.endpoint,
           "REELFORGE_S3_ACCESS_KEY_ID": ACCESS_KEY, "REELFORGE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
           "REELFORGE_S3_BUCKET": "created-by-storage-init"}
    for _ in range(2):  # the second run finds it and changes nothing
        result = subprocess.run([sys.executable, "-m", "reelforge.cli", "storage-init"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    created = ObjectStore(seaweed.endpoint, "created-by-storage-init", ACCESS_KEY, SECRET_KEY)
    created.put_bytes("probe", b"x", "text/plain")
    assert created.get_bytes("probe") == b"x"
