"""The node's configuration: ``<home>/pacsnode.toml`` parsed once into frozen dataclasses.

Every value is validated here, at the edge, with a message that names the file, the key
and the fix, so that nothing deeper has to second-guess a setting.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pacsnode.errors import ConfigError
from pacsnode.model import DuplicatePolicy

CONFIG_NAME = "pacsnode.toml"
AET_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash


@dataclass(frozen=True)
class StoreSettings:
    """Who may store and what a repeated SOP Instance UID does."""

    accept_from: str = "any"  # "any" (like Orthanc) or "registered"
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    quota_bytes: int = 0  # 0 = no quota
    fsync: bool = True  # Success only once file, folder entry and index row reached the disk
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
class NodeConfig:
    """Everything ``pacsnode.toml`` says about one node."""

    home: Path
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


def validate_port(port: Any, where: str) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port!r} is not valid; use a whole number from 1 to 65535")
    return port


def _section(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return value


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, where: str,
           minimum: float | None = None) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key} = {value!r} must be of type {kind.__name__}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}.{key} = {value!r} must be at least {minimum}")
    return value


def parse_config(data: dict[str, Any], home: Path, source: str = CONFIG_NAME) -> NodeConfig:
    """Turn the TOML tables into a validated NodeConfig."""
    node = _section(data, "node", source)
    store = _section(data, "store", source)
    query = _section(data, "query", source)
    network = _section(data, "network", source)
    qc = _section(data, "qc", source)
    tls = _section(data, "tls", source)
    where = f"{source}: [node]"
    accept_from = _typed(store, "accept_from", str, "any", f"{source}: [store]")
    if accept_from not in ("any", "registered"):
        raise ConfigError(f"{source}: [store].accept_from = {accept_from!r}; use \"any\" or \"registered\"")
    duplicates = _typed(store, "duplicates", str, "keep-first", f"{source}: [store]")
    try:
        policy = DuplicatePolicy(duplicates)
    except ValueError:
        raise ConfigError(
            f"{source}: [store].duplicates = {duplicates!r}; use \"keep-first\" or \"replace\""
        ) from None
    return NodeConfig(
        home=home,
        aet=validate_aet(_typed(node, "aet", str, "PACSNODE", where), f"{where}.aet"),
        host=_typed(node, "host", str, "127.0.0.1", where),
        port=validate_port(node.get("port", 11112), f"{where}.port"),
        institution=_typed(node, "institution", str, "", where),
        storage_dir=_typed(node, "storage_dir", str, "storage", where),
        index_file=_typed(node, "index_file", str, "index.sqlite", where),
        recognition_file=_typed(node, "recognition_file", str, "recognition.toml", where),
        qc_rules_file=_typed(node, "qc_rules_file", str, "qc_rules.toml", where),
        store=StoreSettings(
            accept_from=accept_from,
            duplicates=policy,
            quota_bytes=_typed(store, "quota_bytes", int, 0, f"{source}: [store]", minimum=0),
            fsync=_typed(store, "fsync", bool, True, f"{source}: [store]"),
            stable_seconds=_typed(store, "stable_seconds", int, 60, f"{source}: [store]", minimum=0),
        ),
        query=QuerySettings(
            max_results=_typed(query, "max_results", int, 1000, f"{source}: [query]", minimum=0),
            case_sensitive_pn=_typed(query, "case_sensitive_pn", bool, True, f"{source}: [query]"),
        ),
        network=NetworkSettings(
            max_pdu=_typed(network, "max_pdu", int, 1_048_576, f"{source}: [network]", minimum=0),
            max_associations=_typed(network, "max_associations", int, 32, f"{source}: [network]",
                                    minimum=1),
            acse_timeout=_typed(network, "acse_timeout", float, 30.0, f"{source}: [network]", minimum=1),
            dimse_timeout=_typed(network, "dimse_timeout", float, 60.0, f"{source}: [network]", minimum=1),
            network_timeout=_typed(network, "network_timeout", float, 60.0, f"{source}: [network]",
                                    minimum=1),
            strict_called_aet=_typed(network, "strict_called_aet", bool, False, f"{source}: [network]"),
            workers=_typed(network, "workers", int, 1, f"{source}: [network]", minimum=1),
            pdu_timeout=_typed(network, "pdu_timeout", float, 30.0, f"{source}: [network]", minimum=1),
            max_associations_per_address=_typed(network, "max_associations_per_address", int, 32,
                                                f"{source}: [network]", minimum=1),
            max_pending_connections=_typed(network, "max_pending_connections", int, 64, f"{source}: [network]",
                                           minimum=1),
        ),
        qc=QcSettings(
            auto_accept=_typed(qc, "auto_accept", bool, True, f"{source}: [qc]"),
            watch_stable=_typed(qc, "watch_stable", bool, True, f"{source}: [qc]"),
        ),
        tls=_tls(tls, home, source),
    )


def _tls(table: dict[str, Any], home: Path, source: str) -> TlsSettings:
    where = f"{source}: [tls]"
    settings = TlsSettings(
        enabled=_typed(table, "enabled", bool, False, where),
        certificate=_typed(table, "certificate", str, "", where),
        private_key=_typed(table, "private_key", str, "", where),
        ca_certificates=_typed(table, "ca_certificates", str, "", where),
        require_client_certificate=_typed(table, "require_client_certificate", bool, False, where),
        verify_peer_hostname=_typed(table, "verify_peer_hostname", bool, False, where),
    )
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
    return parse_config(data, home, source=str(path))


def render_config(aet: str, host: str, port: int, institution: str) -> str:
    """The pacsnode.toml that ``init`` writes: every setting shown with its default."""
    return f"""# pacsnode node configuration. Restart `pacsnode serve` after editing.
[node]
aet = "{aet}"              # this node's AE title
host = "{host}"        # listening address (a production node sets its LAN address)
port = {port}
institution = "{institution}"       # code of the hospital this node belongs to (see recognition.toml)
storage_dir = "storage"     # instance files, relative to this folder
index_file = "index.sqlite"
recognition_file = "recognition.toml"
qc_rules_file = "qc_rules.toml"

[store]
accept_from = "any"         # "any" calling AE may C-STORE (like Orthanc), or only "registered" peers
duplicates = "keep-first"   # a repeated SOP Instance UID: "keep-first" or "replace"
quota_bytes = 0             # 0 = no quota; past it C-STORE answers Out of Resources (0xA700)
fsync = true                # Success only after file, folder entry and index row reached the disk.
                            # false: a killed process still loses nothing, a power cut may (faster)
stable_seconds = 60         # a study with no new instance for this long is stable (QC runs)

[query]
max_results = 1000          # C-FIND answers at most this many matches (0 = unlimited)
case_sensitive_pn = true    # person-name matching per the standard; false = like Orthanc's default

[qc]
auto_accept = true          # a study whose required checks all pass becomes "accepted" without a reviewer
watch_stable = true         # run the checks when a study has been stable for [store] stable_seconds

[network]
max_pdu = 1048576           # maximum PDU we receive (bytes)
max_associations = 32       # per worker process
workers = 1                 # processes sharing the port (SO_REUSEPORT); 2+ uses more cores under many associations
acse_timeout = 30
dimse_timeout = 60
network_timeout = 60
strict_called_aet = false   # true: refuse associations whose called AE is not ours
pdu_timeout = 30            # seconds a PDU may take once its first byte arrived (a byte every 2 s holds nothing)
max_associations_per_address = 32  # per source address (per worker); lower keeps one host from taking all
max_pending_connections = 64        # connections that have not sent an A-ASSOCIATE-RQ yet (per worker)

[tls]
enabled = false             # true: the DICOM port speaks TLS only (BCP 195)
certificate = ""            # this node's certificate (PEM), relative to this folder
private_key = ""            # its private key (PEM, unencrypted)
ca_certificates = ""        # CA certificates that sign the peers' certificates (verification)
require_client_certificate = false  # mutual authentication: peers must present a certificate
verify_peer_hostname = false        # outgoing: check the peer certificate names the peer's host
"""
