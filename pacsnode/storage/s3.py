"""Instance files in an S3 bucket (``[storage] url = "s3://bucket/prefix?endpoint=..."``).

The keys are ``<prefix>/<aa>/<bb>/<sop_instance_uid>.dcm``: the same relative paths as the
folder layout, so the index and ``check`` read the same on both backends.

Why a store through here can be trusted once it answered Success:

- every PUT carries ``If-None-Match: *``: the store refuses (412) rather than overwrite an
  object, so the object an index row points to is never replaced (a second copy of a UID
  gets a sibling key, as on the filesystem);
- every PUT carries ``x-amz-checksum-sha256`` of the bytes the *receiver* hashed as they
  arrived: the server recomputes it over what it received and refuses a mismatch
  (BadDigest), and the checksum it answers is compared too (read back when it answers none);
- only then does ``place`` return, and the node commits the row and answers Success after.

Credentials come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
optionally ``AWS_SESSION_TOKEN``) and are never logged or put in a message. The client is
boto3 (SigV4 signing, retries, conditional writes and checksums, well kept); it is made on
first use in each process (``serve`` forks its workers; a client must not cross a fork).
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, NoReturn, Sequence

from pacsnode.errors import ConfigError, InvalidInstance, StorageUnavailable
from pacsnode.model import ReceivedFile, StoredFile
from pacsnode.storage import orphans
from pacsnode.storage.area import CHUNK, DigestMismatch, sha256_of, sha256_stream
from pacsnode.storage.filesystem import check_quota, relative_path_for, sibling_name
from pacsnode.storage.s3_url import S3Location, parse_s3_url
from pacsnode.storage.tempfiles import temp_prefix

SPOOL_BYTES = 16 << 20  # ``open``: a file up to this size is held in memory, a larger one in the temp folder
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """Instance files as objects under one prefix of one bucket (a :class:`StorageArea`)."""

    shared = True  # other nodes may store into the same bucket: their stores are not in our serve.lock

    def __init__(self, location: S3Location, temp_dir: Path, quota_bytes: int = 0,
                 credentials: tuple[str, str, str | None] | None = None) -> None:
        self.location = location
        self.temp_dir = temp_dir
        self.quota_bytes = quota_bytes
        self._credentials = credentials or _credentials_from_environment()
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, temp_dir: Path, quota_bytes: int = 0) -> "S3Storage":
        return cls(parse_s3_url(url, "[storage].url"), temp_dir, quota_bytes)

    def __repr__(self) -> str:  # never the credentials
        return f"S3Storage({self.describe()!r})"

    # -- plumbing --------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = self._make_client()
                    self._client_pid = os.getpid()
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        key_id, secret, token = self._credentials
        config = Config(s3={"addressing_style": "path"}, signature_version="s3v4", connect_timeout=5,
                        read_timeout=30, retries={"mode": "standard", "total_max_attempts": 3},
                        max_pool_connections=64, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        return boto3.session.Session().client(
            "s3", endpoint_url=self.location.endpoint or None, region_name=self.location.region,
            aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token, config=config)

    def key(self, relative_path: str) -> str:
        if not relative_path or relative_path.startswith("/") or ".." in relative_path.split("/"):
            raise InvalidInstance(f"path {relative_path!r} escapes the storage area")
        return self.location.prefix + relative_path

    def _call(self, what: str, relative_path: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """One S3 request; its failures as FileNotFoundError, FileExistsError, DigestMismatch or
        StorageUnavailable (the server, the network, the credentials: anything else)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.location.bucket, **kwargs)
        except ClientError as exc:
            _raise_client_error(exc, what, relative_path)
        except BotoCoreError as exc:  # connection refused or reset, timeouts, retries exhausted
            raise StorageUnavailable(f"object storage unreachable ({what} {relative_path}): "
                                     f"{type(exc).__name__}") from None

    # -- the seam --------------------------------------------------------------------------
    def describe(self) -> str:
        return self.location.display()

    def place(self, temp_path: Path, sop_instance_uid: str, received: ReceivedFile | None = None) -> StoredFile:
        """PUT the temp file under its UID's key (a sibling key when taken), confirmed; consumes it."""
        relative = relative_path_for(sop_instance_uid)
        size = temp_path.stat().st_size
        if received is not None and received.size == size:
            sha256 = received.sha256
        else:
            sha256 = sha256_of(temp_path)
        candidate = relative
        for _attempt in range(8):
            try:
                self.put(candidate, temp_path, sha256, size)
                break
            except FileExistsError:
                candidate = sibling_name(relative)
        else:
            raise StorageUnavailable(f"object storage refused 8 names for {relative}")
        temp_path.unlink(missing_ok=True)
        return StoredFile(candidate, size, sha256)

    def put(self, relative_path: str, source: Path, sha256: str, size: int | None = None) -> None:
        """PUT ``source`` at ``relative_path`` with If-None-Match: * and its SHA-256; confirmed."""
        expected = base64.b64encode(bytes.fromhex(sha256)).decode()
        length = source.stat().st_size if size is None else size
        with open(source, "rb") as body:
            answer = self._call("put", relative_path, self.client.put_object, Key=self.key(relative_path),
                                Body=body, ContentLength=length, IfNoneMatch="*", ChecksumSHA256=expected,
                                ContentType="application/dicom")
        confirmed = answer.get("ChecksumSHA256")
        if confirmed is None:  # a store that does not answer the checksum: read the object back
            confirmed = base64.b64encode(bytes.fromhex(self.sha256(relative_path))).decode()
        if confirmed != expected:
            self.remove(relative_path)
            raise DigestMismatch(f"{relative_path}: the object store holds other bytes than were received")

    def open(self, relative_path: str) -> BinaryIO:
        """The whole object, downloaded into memory (or the temp folder when large), position 0."""
        answer = self._call("get", relative_path, self.client.get_object, Key=self.key(relative_path))
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=str(self.temp_dir))  # noqa: SIM115
        try:
            _copy_body(answer, spool, relative_path)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool  # type: ignore[return-value]

    def read_range(self, relative_path: str, offset: int, length: int) -> bytes:
        """A ranged GET (frames, byte ranges): only those bytes cross the network."""
        if length <= 0:
            return b""
        answer = self._call("get", relative_path, self.client.get_object, Key=self.key(relative_path),
                            Range=f"bytes={offset}-{offset + length - 1}")
        try:
            return bytes(answer["Body"].read())
        except Exception as exc:
            raise StorageUnavailable(f"object storage read of {relative_path} broke off: {type(exc).__name__}") \
                from None

    def read_ranges(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """One ranged GET per range (a frame's fragments are usually one range)."""
        for offset, length in ranges:
            yield self.read_range(relative_path, offset, length)

    @contextmanager
    def local_file(self, relative_path: str) -> Iterator[Path]:
        """The object downloaded to the temp folder (owned by this process), removed after the block."""
        fd, name = tempfile.mkstemp(prefix=temp_prefix(), suffix=".dcm", dir=self.temp_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                answer = self._call("get", relative_path, self.client.get_object, Key=self.key(relative_path))
                _copy_body(answer, out, relative_path)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _head(self, relative_path: str) -> dict[str, Any]:
        return self._call("head", relative_path, self.client.head_object, Key=self.key(relative_path))

    def size(self, relative_path: str) -> int:
        return int(self._head(relative_path)["ContentLength"])

    def sha256(self, relative_path: str) -> str:
        """Read the object back and hash it (the server's stored checksum is not evidence)."""
        return sha256_stream(self.open(relative_path))

    def exists(self, relative_path: str) -> bool:
        try:
            self._head(relative_path)
            return True
        except FileNotFoundError:
            return False

    def age_seconds(self, relative_path: str) -> float:
        return _age(self._head(relative_path))

    def remove(self, relative_path: str) -> None:
        self._call("delete", relative_path, self.client.delete_object, Key=self.key(relative_path))

    def remove_if_orphan(self, relative_path: str, is_indexed: Callable[[str], bool], min_age: float) -> bool:
        """Delete an unindexed object only if it is one at this very moment (``check --repair``), in the
        order ``storage/orphans.py`` explains. HEAD is the stat, Last-Modified the age, ETag and
        Last-Modified the identity: a key is never written over (If-None-Match), so the object deleted
        is the one that was checked."""
        return orphans.remove_if_orphan(
            relative_path, stat=self._head, age=_age,
            identity=lambda head: (head.get("ETag"), head.get("LastModified")), is_indexed=is_indexed,
            remove=self.remove, min_age=min_age)

    def walk(self) -> Iterator[str]:
        """Every object under the prefix, as a relative path (listed page by page)."""
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self.location.prefix
        pages = self._call("list", prefix or "/", paginator.paginate, Prefix=prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][len(prefix):]
        except Exception as exc:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, (BotoCoreError, ClientError)):
                raise StorageUnavailable(f"object storage listing failed: {type(exc).__name__}") from None
            raise

    def check_room(self, incoming_bytes: int, used_bytes: int) -> None:
        check_quota(self.quota_bytes, incoming_bytes, used_bytes)

    def free_bytes(self) -> int | None:
        return None

    def available(self) -> bool:
        try:
            self._call("head", "bucket", self.client.head_bucket)
            return True
        except (StorageUnavailable, FileNotFoundError):
            return False


def _copy_body(answer: dict[str, Any], out: Any, relative_path: str) -> None:
    """Copy a GET's body to ``out``; a short or broken body is StorageUnavailable, never a short file."""
    body = answer["Body"]
    expected = int(answer.get("ContentLength", -1))
    copied = 0
    try:
        while chunk := body.read(CHUNK):
            out.write(chunk)
            copied += len(chunk)
    except Exception as exc:
        raise StorageUnavailable(f"object storage read of {relative_path} broke off: {type(exc).__name__}") from None
    if expected >= 0 and copied != expected:
        raise StorageUnavailable(f"object storage sent {copied} of {expected} bytes of {relative_path}")


def _age(head: dict[str, Any]) -> float:
    modified = head.get("LastModified")
    if not isinstance(modified, datetime):
        return 0.0  # unknown: treat as just stored (never an orphan by age)
    return time.time() - modified.timestamp()


def _raise_client_error(exc: Any, what: str, relative_path: str) -> NoReturn:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _MISSING or status == 404:
        raise FileNotFoundError(f"no object {relative_path} in the storage bucket") from None
    if code == "PreconditionFailed" or status == 412:
        raise FileExistsError(f"object {relative_path} exists (never overwritten)") from None
    if code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
        raise DigestMismatch(f"{relative_path}: the object store received other bytes than were sent") from None
    raise StorageUnavailable(f"object storage refused {what} of {relative_path}: {code or status}") from None


def _credentials_from_environment() -> tuple[str, str, str | None]:
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise ConfigError("[storage].url names an S3 bucket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          "in the environment of every pacsnode command")
    return key_id, secret, os.environ.get("AWS_SESSION_TOKEN") or None

