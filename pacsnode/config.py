"""The node's configuration: ``<home>/pacsnode.toml`` parsed once into frozen dataclasses.

Every value is validated here, at the edge, with a message that names the file, the key
and the fix, so that nothing deeper has to second-guess a setting.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pacsnode.errors import ConfigError
from pacsnode.model import DuplicatePolicy
from pacsnode.node_name import default_node_name, validate_node_name
from pacsnode.storage.s3_url import checked_storage_url
from pacsnode.web.public_url import checked_web
from pacsnode.config_template import render_config  # noqa: F401  (re-exported: init, tests)

CONFIG_NAME = "pacsnode.toml"
AET_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash


@dataclass(frozen=True)
class StoreSettings:
    """Who may store and what a repeated SOP Instance UID does."""

    accept_from: str = "any"  # "any" (like Orthanc) or "registered"
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    quota_bytes: int = 0  # 0 = no quota
    fsync: bool = True  # Success only once the instance survives a power cut (durability.py, recovery.py)
    stable_seconds: int = 60


@dataclass(frozen=True)
class QuerySettings:
    """C-FIND behaviour."""

    max_results: int = 1000  # 0 = unlimited
    case_sensitive_pn: bool = True


@dataclass(frozen=True)
class QcSettings:
    """Quality control: accept automatically what passes every required check."""

    auto_accept: bool = True
    watch_stable: bool = True


@dataclass(frozen=True)
class NetworkSettings:
    """Association limits and timeouts."""

    max_pdu: int = 1_048_576
    max_associations: int = 32
    workers: int = 1  # processes sharing the port (SO_REUSEPORT): more use more cores
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    strict_called_aet: bool = False
    pdu_timeout: float = 30.0  # a PDU, once started, must arrive whole within this (slowloris)
    max_associations_per_address: int = 32  # from one source address; lower keeps one host from taking all
    max_pending_connections: int = 64  # connections that have not sent an A-ASSOCIATE-RQ yet


@dataclass(frozen=True)
class TlsSettings:
    """DICOM TLS (PS3.15 B.1, BCP 195): our certificate, whom we trust, whether peers must show one.

    Paths are relative to the node home. ``enabled`` makes the listening port TLS-only; outgoing
    associations use TLS for peers registered with ``--tls``.
    """

    enabled: bool = False
    certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    require_client_certificate: bool = False
    verify_peer_hostname: bool = False


@dataclass(frozen=True)
class WebSettings:
    """DICOMweb (PS3.18) beside DIMSE: where it listens and how much one request may carry."""
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8042
    max_body_bytes: int = 1_073_741_824  # one STOW-RS request body; a larger Content-Length is refused unread
    max_results: int = 1000  # QIDO-RS answers at most this many matches per request (limit is capped here)
    access_cache_seconds: float = 5.0  # a (caller, study) access answer is reused this long (0: never)
    read_audit_window_seconds: int = 60  # viewer reads of a study are audited per caller, kind and window
    public_url: str = ""  # the address behind a load balancer, for RetrieveURL/BulkDataURI (web/public_url.py)


@dataclass(frozen=True)
class StorageSettings:
    """Where instance files live: ``url`` names an S3 bucket (issue 16.2); empty = ``[node] storage_dir``."""

    url: str = ""


@dataclass(frozen=True)
class LogSettings:
    """How ``serve`` writes its log: human lines, or one JSON object per line for collectors."""

    format: str = "text"


@dataclass(frozen=True)
class IndexSettings:
    """Where the index lives: ``url`` empty = ``[node] index_file`` (SQLite) in the home, or a
    ``postgresql://user@host:port/db`` URL (issue 16). The password comes from the environment
    (``PGPASSWORD``, ``~/.pgpass``: libpq's rules); one written in the URL is accepted but never
    shown (:func:`redacted_url`)."""

    url: str = ""

    @property
    def postgresql(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``pacsnode.toml`` says about one node."""

    home: Path
    name: str = ""  # this node's name in the audit; "" = default_node_name() (see node_name)
    aet: str = "PACSNODE"
    host: str = "127.0.0.1"
    port: int = 11112
    institution: str = ""
    storage_dir: str = "storage"
    index_file: str = "index.sqlite"
    recognition_file: str = "recognition.toml"
    qc_rules_file: str = "qc_rules.toml"
    store: StoreSettings = field(default_factory=StoreSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    qc: QcSettings = field(default_factory=QcSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    web: WebSettings = field(default_factory=WebSettings)
    log: LogSettings = field(default_factory=LogSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def node_name(self) -> str:
        """Who served, in every audit row: nodes sharing one archive share its audit (issue 16)."""
        return self.name or default_node_name(self.aet, self.port)

    @property
    def storage_path(self) -> Path:
        return self.home / self.storage_dir

    @property
    def index_path(self) -> Path:
        return self.home / self.index_file

    @property
    def temp_path(self) -> Path:
        """Incoming data lands here: same filesystem as storage, so placing a file is a rename."""
        return self.home / "tmp"

    @property
    def recognition_path(self) -> Path:
        return self.home / self.recognition_file

    @property
    def qc_rules_path(self) -> Path:
        return self.home / self.qc_rules_file

    def with_overrides(self, **changes: Any) -> "NodeConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def validate_aet(aet: str, where: str) -> str:
    """Return the AE title or raise ConfigError naming ``where``."""
    if not AET_PATTERN.match(aet) or not aet.strip():
        raise ConfigError(
            f"{where}: AE title {aet!r} is not valid; use 1-16 printable ASCII characters without '\\'"
        )
    return aet.strip()


def validate_host(host: str, where: str) -> str:
    """An IP address or a name that resolves (no spaces): a typo here would bind the wrong peer."""
    if not host or host != host.strip() or any(c.isspace() or not c.isprintable() for c in host) or len(host) > 253:
        raise ConfigError(f"{where}: host {host!r} is not valid; give an IP address or a host name without spaces")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise ConfigError(f"{where}: host {host!r} does not resolve; give an IP address or a resolvable name") from None
    return host


def validate_port(port: Any, where: str) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port!r} is not valid; use a whole number from 1 to 65535")
    return port


@dataclass(frozen=True)
class Key:
    """One setting of ``pacsnode.toml``: its type, default and allowed values.

    ``SCHEMA`` below is the one place settings are declared: a key not listed there is refused
    (with the nearest valid name), so a typo can never quietly fall back to a default.
    """

    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    reserved: bool = False  # accepted and validated, read by a feature still to come


TIMEOUT = (1, 3600)  # minimum, maximum (seconds)
SCHEMA: dict[str, dict[str, Key]] = {
    "node": {
        "name": Key(str, ""),
        "aet": Key(str, "PACSNODE"),
        "host": Key(str, "127.0.0.1"),
        "port": Key(int, 11112, 1, 65535),
        "institution": Key(str, ""),
        "storage_dir": Key(str, "storage"),
        "index_file": Key(str, "index.sqlite"),
        "recognition_file": Key(str, "recognition.toml"),
        "qc_rules_file": Key(str, "qc_rules.toml"),
    },
    "store": {
        "accept_from": Key(str, "any", choices=("any", "registered")),
        "duplicates": Key(str, "keep-first", choices=tuple(p.value for p in DuplicatePolicy)),
        "quota_bytes": Key(int, 0, 0),
        "fsync": Key(bool, True),
        "stable_seconds": Key(int, 60, 0, 7 * 86400),
    },
    "query": {
        "max_results": Key(int, 1000, 0, 10_000_000),
        "case_sensitive_pn": Key(bool, True),
    },
    "qc": {
        "auto_accept": Key(bool, True),
        "watch_stable": Key(bool, True),
    },
    "network": {
        # 4096 is the smallest maximum PDU DCMTK and PS3.8 peers expect; above 16 MiB one
        # PDU costs more memory than any peer needs. 0 ("unlimited" in PS3.8) is refused.
        "max_pdu": Key(int, 1_048_576, 4096, 16 * 1_048_576),
        "max_associations": Key(int, 32, 1, 1000),
        "workers": Key(int, 1, 1, 64),
        "acse_timeout": Key(float, 30.0, *TIMEOUT),
        "dimse_timeout": Key(float, 60.0, *TIMEOUT),
        "network_timeout": Key(float, 60.0, *TIMEOUT),
        "strict_called_aet": Key(bool, False),
        "pdu_timeout": Key(float, 30.0, *TIMEOUT),  # a started PDU must arrive whole within this
        "max_associations_per_address": Key(int, 32, 1, 1000),
        "max_pending_connections": Key(int, 64, 1, 10_000),  # connections without an A-ASSOCIATE-RQ yet
    },
    "tls": {
        "enabled": Key(bool, False),
        "certificate": Key(str, ""),
        "private_key": Key(str, ""),
        "ca_certificates": Key(str, ""),
        "require_client_certificate": Key(bool, False),
        "verify_peer_hostname": Key(bool, False),
    },
    "web": {  # DICOMweb (issue 14), served by `pacsnode serve` at /dicom-web when enabled
        "enabled": Key(bool, False),
        "host": Key(str, "127.0.0.1"),
        "port": Key(int, 8042, 1, 65535),
        "max_body_bytes": Key(int, 1_073_741_824, 1024, 64 * 1_073_741_824),
        "max_results": Key(int, 1000, 1, 1_000_000),
        "access_cache_seconds": Key(float, 5.0, 0.0, 60.0),
        "read_audit_window_seconds": Key(int, 60, 1, 3600),
        "public_url": Key(str, ""),
    },
    "storage": {  # "s3://bucket/prefix?endpoint=http://host:port" (credentials from the environment)
        "url": Key(str, ""),
    },
    "log": {  # serve's log lines: "text" for people, "json" (one object per line) for log collectors
        "format": Key(str, "text", choices=("text", "json")),
    },
    "index": {  # issue 16: "" = SQLite ([node] index_file); "postgresql://user@host:port/db" = PostgreSQL
        "url": Key(str, ""),
    },
}


def _nearest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(options)}"


def check_known(data: dict[str, Any], source: str) -> None:
    """Refuse any section or key ``SCHEMA`` does not declare, naming the nearest valid one."""
    for section, table in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]{_nearest(section, SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key in table:
            if key not in SCHEMA[section]:
                raise ConfigError(f"{source}: [{section}] has no setting {key!r}{_nearest(key, SCHEMA[section])}")


def _is_kind(value: Any, kind: type) -> bool:
    """``value`` is of the declared type (a TOML boolean is not an int). A function, not an inline
    ``isinstance``, so that the value stays ``Any`` for the range checks that follow."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def setting(data: dict[str, Any], section: str, key: str, source: str) -> Any:
    """The validated value of ``[section] key`` (its declared default when absent)."""
    spec = SCHEMA[section][key]
    value = data.get(section, {}).get(key, spec.default)
    where = f"{source}: [{section}].{key} = {value!r}"
    kind = spec.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not _is_kind(value, kind):
        raise ConfigError(f"{where} must be of type {kind.__name__}")
    if kind is float and not math.isfinite(value):  # nan passes every range comparison; inf is no deadline
        raise ConfigError(f"{where} is not a finite number"
                          + (f"; use {spec.minimum:g} to {spec.maximum:g}" if spec.maximum is not None else ""))
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{where}; use one of {', '.join(repr(c) for c in spec.choices)}{_nearest(value, spec.choices)}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{where} is out of range; use at least {spec.minimum:g}"
                          + (f" and at most {spec.maximum:g}" if spec.maximum is not None else ""))
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{where} is out of range; use at most {spec.maximum:g}")
    return value


def section_values(data: dict[str, Any], section: str, source: str) -> dict[str, Any]:
    """Every declared key of one section, validated: ``Settings(**section_values(...))``."""
    return {key: setting(data, section, key, source) for key in SCHEMA[section]}


def parse_config(data: dict[str, Any], home: Path, source: str = CONFIG_NAME) -> NodeConfig:
    """Turn the TOML tables into a validated NodeConfig (unknown keys and bad values refused)."""
    check_known(data, source)
    node = section_values(data, "node", source)
    store = section_values(data, "store", source)
    store["duplicates"] = DuplicatePolicy(store["duplicates"])
    where = f"{source}: [node]"
    node["aet"] = validate_aet(node["aet"], f"{where}.aet")
    node["name"] = validate_node_name(node["name"], f"{where}.name")
    return NodeConfig(
        home=home,
        **node,
        store=StoreSettings(**store),
        query=QuerySettings(**section_values(data, "query", source)),
        network=NetworkSettings(**section_values(data, "network", source)),
        qc=QcSettings(**section_values(data, "qc", source)),
        tls=_tls(section_values(data, "tls", source), home, source),
        web=WebSettings(**checked_web(section_values(data, "web", source), source)),
        log=LogSettings(**section_values(data, "log", source)),
        index=_index(data, source),
        storage=StorageSettings(url=checked_storage_url(section_values(data, "storage", source)["url"], source)),
    )


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (what messages and logs may show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[-1]}"))


def _index(data: dict[str, Any], source: str) -> IndexSettings:
    """``[index] url``: empty, or a PostgreSQL URL with a host and a database (never echoed with a password)."""
    value = data.get("index", {}).get("url", "")
    if not isinstance(value, str):
        raise ConfigError(f"{source}: [index].url must be a string")
    url = value.strip()
    if not url:
        return IndexSettings()
    where = f"{source}: [index].url"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise ConfigError(f"{where} is not a valid URL ({exc})") from None
    shown = redacted_url(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{where} = {shown!r}: only postgresql://user@host:port/database is supported "
                          "(leave it empty for the SQLite index in the home)")
    if not parts.hostname:
        raise ConfigError(f"{where} = {shown!r} names no host; e.g. postgresql://pacsnode@127.0.0.1:5432/pacsnode")
    if not parts.path.strip("/") or "/" in parts.path.strip("/"):
        raise ConfigError(f"{where} = {shown!r} names no database; e.g. postgresql://pacsnode@{parts.netloc}/pacsnode")
    if any(ch in url for ch in "\x00\n\r\t "):
        raise ConfigError(f"{where} contains a blank or control character")
    return IndexSettings(url=url)


def _tls(values: dict[str, Any], home: Path, source: str) -> TlsSettings:
    where = f"{source}: [tls]"
    settings = TlsSettings(**values)
    if settings.enabled:
        for key in ("certificate", "private_key"):
            value = getattr(settings, key)
            if not value:
                raise ConfigError(f"{where}.{key} is empty; with enabled = true give the path of the node's PEM file")
            if not (home / value).is_file():
                raise ConfigError(f"{where}.{key} = {value!r}: no such file under {home}")
        if settings.require_client_certificate and not settings.ca_certificates:
            raise ConfigError(f"{where}.ca_certificates is empty; require_client_certificate needs the CA "
                              "certificates that sign the peers' certificates")
    if settings.ca_certificates and not (home / settings.ca_certificates).is_file():
        raise ConfigError(f"{where}.ca_certificates = {settings.ca_certificates!r}: no such file under {home}")
    return settings


def load_config(home: Path) -> NodeConfig:
    """Read ``<home>/pacsnode.toml``; a missing home is a HomeError-like ConfigError with the fix."""
    path = home / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path} not found; create the node first with: pacsnode --home {home} init")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return validate_home_paths(parse_config(data, home, source=str(path)), str(path))


#: Settings that name a file or folder of the home (section, key).
HOME_PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("node", "storage_dir"), ("node", "index_file"), ("node", "recognition_file"), ("node", "qc_rules_file"),
    ("tls", "certificate"), ("tls", "private_key"), ("tls", "ca_certificates"),
)


def home_path_values(config: NodeConfig) -> dict[tuple[str, str], str]:
    """The value of every ``HOME_PATH_KEYS`` setting (empty when unset)."""
    return {(section, key): str(getattr(config if section == "node" else getattr(config, section), key))
            for section, key in HOME_PATH_KEYS}


def validate_home_paths(config: NodeConfig, source: str, allow_absolute: bool = True) -> NodeConfig:
    """Refuse paths that leave the home or make maintenance destroy the node (issue 10, item 5).

    A relative path stays inside the home (no ``..``, not the home itself). An absolute path
    is the admin's choice in the live configuration (``allow_absolute``), never taken from a
    backup. Whatever the form, the storage folder must not hold the home, the index or the
    temporary folder (``check --repair`` removes every unindexed file under it, ``clean_temp``
    everything in ``tmp``).
    """
    for (section, key), value in home_path_values(config).items():
        where = f"{source}: [{section}].{key} = {value!r}"
        if not value:
            if section == "node":
                raise ConfigError(f"{where} is empty; name a path inside the home")
            continue
        path = PurePosixPath(value)
        if "\x00" in value:
            raise ConfigError(f"{where} contains a NUL character")
        if path.is_absolute():
            if not allow_absolute:
                raise ConfigError(f"{where} is outside the home; a restored configuration may only name "
                                  "paths inside the home it is restored into")
        elif ".." in path.parts or not path.parts:
            raise ConfigError(f"{where} leaves the home folder or names it; use a path inside the home"
                              + (" (or an absolute path)" if allow_absolute else ""))
    home = Path(os.path.realpath(config.home))
    storage = Path(os.path.realpath(config.storage_path))
    temp = Path(os.path.realpath(config.temp_path))
    where = f"{source}: [node].storage_dir = {config.storage_dir!r}"
    if storage == home or storage in home.parents:
        raise ConfigError(f"{where} holds the whole home; use a folder of its own, e.g. \"storage\"")
    if storage == temp or temp in storage.parents or storage in temp.parents:
        raise ConfigError(f"{where} overlaps the temporary folder {temp}; use a folder of its own")
    for (section, key), value in home_path_values(config).items():
        if not value or (section, key) == ("node", "storage_dir"):
            continue
        real = Path(os.path.realpath(config.home / value))
        for folder, name, remover in ((storage, "storage folder", "check --repair"), (temp, "temporary folder",
                                                                                     "a starting server")):
            if folder in real.parents:
                raise ConfigError(f"{source}: [{section}].{key} = {value!r} lies in the {name}, where {remover} "
                                  "would remove it; keep it outside")
    return config
