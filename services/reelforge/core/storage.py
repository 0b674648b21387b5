"""Object storage for staged frames and delivered assets, over any S3-compatible service (SeaweedFS here).

Keys are deterministic per job ({tenant}/{job_id}/...), so a re-run overwrites instead of duplicating,
and deleting a job is one prefix delete.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import boto3
import numpy as np
import numpy.typing as npt
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.response import StreamingBody

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

STAGING_CONTENT_TYPE = "application/x-npy"
STREAM_CHUNK_BYTES = 64 * 1024
# SigV4 presigned URLs cannot live longer than 7 days.
MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
T = TypeVar("T")


class StorageError(Exception):
    """The object store failed or could not be reached."""


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class ObjectStream(NamedTuple):
    chunks: Iterator[bytes]
    content_length: int
    content_type: str


class ObjectStore:
    def __init__(
        self,
        endpoint_url: str | None,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        region: str = "us-east-1",
        public_endpoint_url: str | None = None,
    ) -> None:
        """endpoint_url None means AWS S3 itself; public_endpoint_url None means clients reach endpoint_url."""
        self.bucket = bucket
        self.region = region
        credentials = (access_key_id, secret_access_key, region)
        self._client = _make_client(endpoint_url, credentials, _OPERATION_CONFIG)
        # Readiness probes must answer quickly, so they get no retries and short timeouts.
        self._probe_client = _make_client(endpoint_url, credentials, _PROBE_CONFIG)
        # The signature covers the Host header, so URLs handed to people are signed for the host they use.
        self._presign_client = _make_client(
            public_endpoint_url or endpoint_url, credentials, _OPERATION_CONFIG
        )

    def ensure_bucket(self) -> None:
        with _storage_errors(self.bucket):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _error_code(exc) not in _NOT_FOUND_CODES:
                    raise
            try:
                self._create_bucket()
            except ClientError as exc:
                # Another process created it between our check and our create.
                if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    def ping(self) -> None:
        """Raise StorageError unless the store answers and the bucket exists."""
        try:
            with _storage_errors(self.bucket):
                self._probe_client.head_bucket(Bucket=self.bucket)
        except ObjectNotFound:
            raise StorageError(f"bucket {self.bucket} does not exist") from None

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with _storage_errors(key):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        # upload_file switches to multipart for large files, which put_object cannot do.
        with _storage_errors(key):
            self._client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})

    def get_bytes(self, key: str) -> bytes:
        with _storage_errors(key):
            data: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return data

    def open_stream(self, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES) -> ObjectStream:
        """Stream an object to an HTTP client without holding it in memory."""
        with _storage_errors(key):
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        return ObjectStream(
            chunks=_iter_body(response["Body"], chunk_bytes, key),
            content_length=response["ContentLength"],
            content_type=response.get("ContentType", "application/octet-stream"),
        )

    def exists(self, key: str) -> bool:
        try:
            with _storage_errors(key):
                self._client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix; returns how many were deleted."""
        if not prefix:
            raise ValueError("refusing to delete with an empty prefix: it would empty the whole bucket")
        deleted = 0
        with _storage_errors(prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                # A listing page holds at most 1000 keys, which is also DeleteObjects' limit.
                objects: list[ObjectIdentifierTypeDef] = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    deleted += self._delete_batch(objects)
        return deleted

    def presigned_get_url(self, key: str, expires_s: int) -> str:
        if not 1 <= expires_s <= MAX_PRESIGN_EXPIRY_S:
            raise ValueError(f"expires_s must be within 1..{MAX_PRESIGN_EXPIRY_S}, got {expires_s}")
        with _storage_errors(key):
            url: str = self._presign_client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )
            return url

    def _create_bucket(self) -> None:
        # us-east-1 is the one region S3 refuses an explicit LocationConstraint for.
        if self.region == "us-east-1":
            self._client.create_bucket(Bucket=self.bucket)
        else:
            self._client.create_bucket(
                Bucket=self.bucket,
                CreateBucketConfiguration={"LocationConstraint": self.region},
            )

    def _delete_batch(self, objects: list[ObjectIdentifierTypeDef]) -> int:
        response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise StorageError(f"could not delete {len(errors)} objects, first {first.get('Key')}: {first}")
        return len(objects)


_OPERATION_CONFIG = Config(
    signature_version="s3v4",
    s3={"addressing_style": "path"},  # SeaweedFS and most on-prem stores do not serve bucket subdomains.
    retries={"max_attempts": 3, "mode": "standard"},
    connect_timeout=3,
    read_timeout=30,
)
_PROBE_CONFIG = _OPERATION_CONFIG.merge(
    Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2)
)


def _make_client(endpoint_url: str | None, credentials: tuple[str, str, str], config: Config) -> S3Client:
    access_key_id, secret_access_key, region = credentials
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        config=config,
    )


@contextmanager
def _storage_errors(key: str) -> Iterator[None]:
    """Turn boto exceptions into ours, so callers never import botocore."""
    try:
        yield
    except ClientError as exc:
        if _error_code(exc) in _NOT_FOUND_CODES:
            raise ObjectNotFound(key) from exc
        raise StorageError(f"object store refused the request for {key}: {exc}") from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise StorageError(f"object store unavailable for {key}: {exc}") from exc


def retrying(call: Callable[[], T], budget_s: float, while_waiting: Callable[[], None] = lambda: None) -> T:
    """call(), retried with backoff (0.5 s doubling to 5 s) while the store fails, for up to budget_s: what a
    worker does when object storage restarts or is out of reach. A missing object is an answer, not retried.
    while_waiting runs before each pause (the GPU worker keeps its job's lease)."""
    deadline = time.monotonic() + budget_s
    pause = 0.5
    while True:
        try:
            return call()
        except ObjectNotFound:
            raise
        except StorageError:
            if time.monotonic() + pause > deadline:
                raise
            while_waiting()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _iter_body(body: StreamingBody, chunk_bytes: int, key: str) -> Iterator[bytes]:
    # Closing in finally also runs when the HTTP client disconnects and the generator is closed early.
    try:
        with _storage_errors(key):
            yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# --- deterministic keys ------------------------------------------------------------------------------


def job_prefix(tenant: str, job_id: str) -> str:
    """Everything a job stored; the trailing slash keeps job "a1" from matching job "a10"."""
    for label, part in (("tenant", tenant), ("job_id", job_id)):
        if not part or "/" in part or part in {".", ".."}:
            raise ValueError(f"{label} must be a non-empty key segment without '/', got {part!r}")
    return f"{tenant}/{job_id}/"


def asset_key(tenant: str, job_id: str, name: str) -> str:
    if not name or name.startswith("/"):
        raise ValueError(f"asset name must be a non-empty relative name, got {name!r}")
    return f"{job_prefix(tenant, job_id)}{name}"


def staging_key(tenant: str, job_id: str) -> str:
    return asset_key(tenant, job_id, "staging/frames.npy")


# --- staged frames --------------------------------------------------------------------------------------


def frames_to_bytes(frames: npt.NDArray[np.uint8]) -> bytes:
    _check_frames(frames)
    buffer = io.BytesIO()
    np.save(buffer, frames, allow_pickle=False)
    return buffer.getvalue()


def frames_from_bytes(data: bytes) -> npt.NDArray[np.uint8]:
    """Load staged frames; pickles are refused because staged objects must never execute code."""
    try:
        frames = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"staged frames are not a plain .npy array: {exc}") from exc
    _check_frames(frames)
    return frames  # type: ignore[no-any-return]


def _check_frames(frames: object) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a uint8 numpy array, got {getattr(frames, 'dtype', type(frames))}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
