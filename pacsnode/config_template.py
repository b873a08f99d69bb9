"""The pacsnode.toml that ``pacsnode init`` writes: every setting shown with its default and a comment.

Its own module because it is text for people, not the schema: ``config.py`` parses and validates,
this writes; ``tests/test_config_strict.py`` checks the two declare exactly the same keys.
"""

from __future__ import annotations


def render_config(aet: str, host: str, port: int, institution: str, web_enabled: bool = False,
                  index_url: str = "") -> str:
    """The pacsnode.toml that ``init`` writes: every setting shown with its default."""
    return f"""# pacsnode node configuration. Restart `pacsnode serve` after editing.
# Every command refuses an unknown section or key and a value out of range, naming the nearest
# valid one: a typo never falls back to a default.
[node]
name = ""                   # this node's name in the audit ("" = host name/AE title:port); nodes sharing an archive differ
aet = "{aet}"              # this node's AE title
host = "{host}"        # listening address (a production node sets its LAN address)
port = {port}
institution = "{institution}"       # code of the hospital this node belongs to: must be in recognition.toml
storage_dir = "storage"     # instance files, relative to this folder
index_file = "index.sqlite"
recognition_file = "recognition.toml"
qc_rules_file = "qc_rules.toml"

[store]
accept_from = "any"         # "any" calling AE may C-STORE (like Orthanc), or only "registered" peers.
                            # "any" lets nobody store, never query or retrieve (see README, Security)
duplicates = "keep-first"   # a repeated SOP Instance UID: "keep-first" or "replace"
quota_bytes = 0             # 0 = no quota; past it C-STORE answers Out of Resources (0xA700)
fsync = true                # Success only once the instance survives a power cut: file and folder entry
                            # on disk (an index row the cut loses is re-indexed from its file at the
                            # next start). false: a killed process still loses nothing, a power cut may
stable_seconds = 60         # a study with no new instance for this long is stable (QC runs)

[query]
max_results = 1000          # C-FIND answers at most this many matches (0 = unlimited)
case_sensitive_pn = true    # person-name matching per the standard; false = like Orthanc's default

[qc]
auto_accept = true          # a study whose required checks all pass becomes "accepted" without a reviewer
watch_stable = true         # run the checks when a study has been stable for [store] stable_seconds

[network]
max_pdu = 1048576           # maximum PDU we receive (bytes, 4096 to 16777216; 0 is refused)
max_associations = 32       # per worker process (1 to 1000)
workers = 1                 # processes sharing the port (SO_REUSEPORT); 2+ uses more cores under many associations
acse_timeout = 30           # seconds (1 to 3600), as the two below
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

[web]
enabled = {"true" if web_enabled else "false"}             # true: `serve` also answers DICOMweb (QIDO/WADO/STOW-RS) at http://HOST:PORT/dicom-web
host = "127.0.0.1"          # HTTP listening address (plain HTTP: keep it on loopback or behind a TLS proxy)
port = 8042
max_body_bytes = 1073741824 # largest STOW-RS request body; a larger Content-Length is refused (413) unread
max_results = 1000          # QIDO-RS answers at most this many matches per request
access_cache_seconds = 5.0  # a viewer's (caller, study) access answer is reused this long: a QC rejection or withdrawn share reaches it within this
read_audit_window_seconds = 60  # frames/rendered/metadata reads: one audit row at a caller's first read of a study per window, one with the count at its end
public_url = ""             # behind a load balancer: the address users reach, e.g. "https://pacs.example.org"
                            # (RetrieveURL/BulkDataURI start with it); "" = the address each request came to

[log]
format = "text"             # serve's log: "text", or "json" (one JSON object per line, for log collectors)

[index]
url = "{index_url}"                    # "" = SQLite ([node] index_file); or "postgresql://user@host:5432/db" (password
                            # from PGPASSWORD or ~/.pgpass; several nodes may share one database)

[storage]
url = ""                    # "" = the folder [node] storage_dir; or "s3://bucket/prefix?endpoint=http://host:8333"
                            # (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, never from this file)
"""
