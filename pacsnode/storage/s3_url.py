"""``[storage] url = "s3://bucket/prefix?endpoint=http://host:port&region=..."``, parsed and checked.

Checked when ``pacsnode.toml`` is read (``config.py``), so a typo stops every command with
a message naming the setting, before anything is stored. Credentials never go in the URL
(they would end up in backups of the configuration and in logs): a URL with a user or
password is refused; they come from the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from pacsnode.errors import ConfigError

# S3 bucket naming rules (3-63 characters, lowercase letters, digits, dots and hyphens)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_REGION = re.compile(r"^[a-z0-9-]{1,40}$")
_KNOWN = ("endpoint", "region")


@dataclass(frozen=True)
class S3Location:
    """Bucket, key prefix (empty or ending in ``/``), endpoint (empty: AWS) and region."""

    bucket: str
    prefix: str = ""
    endpoint: str = ""
    region: str = "us-east-1"

    def display(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def checked_storage_url(value: str, source: str) -> str:
    """``[storage] url`` stripped: empty (the storage folder) or a valid s3:// URL (checked now, not at first store)."""
    url = value.strip()
    if url:
        parse_s3_url(url, f"{source}: [storage].url")
    return url


def parse_s3_url(url: str, where: str) -> S3Location:
    """The location ``url`` names, or ConfigError saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ConfigError(f"{where} = {url[:200]!r}: use s3://bucket/prefix?endpoint=http://host:port")
    if parts.username or parts.password or "@" in parts.netloc:
        raise ConfigError(f"{where}: credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY in the environment")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{where}: {bucket[:80]!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
    segments = [s for s in parts.path.split("/") if s]
    for segment in segments:
        if not _PREFIX_PART.match(segment) or segment in (".", ".."):
            raise ConfigError(f"{where}: prefix part {segment[:80]!r} may use only A-Z a-z 0-9 . _ -")
    if parts.fragment:
        raise ConfigError(f"{where}: a URL fragment (#...) means nothing here")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    for name, values in query.items():
        if name not in _KNOWN:
            raise ConfigError(f"{where}: unknown URL parameter {name[:40]!r}; known: {', '.join(_KNOWN)}")
        if len(values) != 1:
            raise ConfigError(f"{where}: {name} given {len(values)} times")
    endpoint = query.get("endpoint", [""])[0]
    if endpoint:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname or ep.username or ep.password \
                or ep.path not in ("", "/") or ep.query or ep.fragment:
            raise ConfigError(f"{where}: endpoint {endpoint[:200]!r} must be http(s)://host[:port]")
        try:
            ep.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise ConfigError(f"{where}: endpoint {endpoint[:200]!r} has a bad port") from None
        endpoint = endpoint.rstrip("/")
    region = query.get("region", ["us-east-1"])[0]
    if not _REGION.match(region):
        raise ConfigError(f"{where}: region {region[:40]!r} is not a region name")
    prefix = "".join(f"{s}/" for s in segments)
    return S3Location(bucket, prefix, endpoint, region)
