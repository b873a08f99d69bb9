"""The index schema, as named migrations applied in order and recorded in ``migrations``.

A migration is never edited once released: a change is a new migration. Text columns are
NOT NULL DEFAULT '' so that matching never has to think about NULL; ``*_folded`` columns
hold the casefolded person names for case-insensitive matching (SQLite's own ``lower``
only folds ASCII).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from pacsnode.index.dialect import migration_statements

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_patients_studies_series_instances",
        """
        CREATE TABLE patients (
            pk INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL DEFAULT '',
            issuer TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL DEFAULT '',
            patient_name_folded TEXT NOT NULL DEFAULT '',
            birth_date TEXT NOT NULL DEFAULT '',
            sex TEXT NOT NULL DEFAULT '',
            UNIQUE (patient_id, issuer)
        );
        CREATE INDEX patients_name ON patients (patient_name);
        CREATE INDEX patients_name_folded ON patients (patient_name_folded);
        CREATE INDEX patients_birth_date ON patients (birth_date);

        CREATE TABLE patient_other_ids (
            patient_pk INTEGER NOT NULL REFERENCES patients (pk) ON DELETE CASCADE,
            other_id TEXT NOT NULL DEFAULT '',
            other_issuer TEXT NOT NULL DEFAULT '',
            type_of_id TEXT NOT NULL DEFAULT '',
            UNIQUE (patient_pk, other_id, other_issuer)
        );
        CREATE INDEX patient_other_ids_id ON patient_other_ids (other_id, other_issuer);

        CREATE TABLE studies (
            pk INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL UNIQUE,
            patient_pk INTEGER NOT NULL REFERENCES patients (pk),
            study_date TEXT NOT NULL DEFAULT '',
            study_time TEXT NOT NULL DEFAULT '',
            accession_number TEXT NOT NULL DEFAULT '',
            study_id TEXT NOT NULL DEFAULT '',
            study_description TEXT NOT NULL DEFAULT '',
            referring_physician TEXT NOT NULL DEFAULT '',
            referring_physician_folded TEXT NOT NULL DEFAULT '',
            institution_name TEXT NOT NULL DEFAULT '',
            institution_code TEXT NOT NULL DEFAULT '',
            modalities TEXT NOT NULL DEFAULT '',
            body_parts TEXT NOT NULL DEFAULT '',
            contrast INTEGER NOT NULL DEFAULT 0,
            lossy INTEGER NOT NULL DEFAULT 0,
            series_count INTEGER NOT NULL DEFAULT 0,
            instance_count INTEGER NOT NULL DEFAULT 0,
            size_bytes INTEGER NOT NULL DEFAULT 0,
            calling_ae TEXT NOT NULL DEFAULT '',
            received_at TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL DEFAULT '',
            specific_character_set TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX studies_patient ON studies (patient_pk);
        CREATE INDEX studies_date ON studies (study_date, study_time);
        CREATE INDEX studies_accession ON studies (accession_number);
        CREATE INDEX studies_study_id ON studies (study_id);
        CREATE INDEX studies_updated ON studies (updated_at);

        CREATE TABLE study_codes (
            study_pk INTEGER NOT NULL REFERENCES studies (pk) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            code_value TEXT NOT NULL DEFAULT '',
            scheme TEXT NOT NULL DEFAULT '',
            meaning TEXT NOT NULL DEFAULT '',
            UNIQUE (study_pk, kind, code_value, scheme)
        );
        CREATE INDEX study_codes_value ON study_codes (kind, code_value);

        CREATE TABLE series (
            pk INTEGER PRIMARY KEY,
            series_uid TEXT NOT NULL UNIQUE,
            study_pk INTEGER NOT NULL REFERENCES studies (pk),
            modality TEXT NOT NULL DEFAULT '',
            body_part TEXT NOT NULL DEFAULT '',
            series_number INTEGER,
            series_description TEXT NOT NULL DEFAULT '',
            series_date TEXT NOT NULL DEFAULT '',
            series_time TEXT NOT NULL DEFAULT '',
            institution_name TEXT NOT NULL DEFAULT '',
            station_name TEXT NOT NULL DEFAULT '',
            device_serial TEXT NOT NULL DEFAULT '',
            instance_count INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX series_study ON series (study_pk);
        CREATE INDEX series_modality ON series (modality);

        CREATE TABLE instances (
            pk INTEGER PRIMARY KEY,
            sop_instance_uid TEXT NOT NULL UNIQUE,
            series_pk INTEGER NOT NULL REFERENCES series (pk),
            sop_class_uid TEXT NOT NULL DEFAULT '',
            instance_number INTEGER,
            transfer_syntax TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT NOT NULL DEFAULT '',
            number_of_frames INTEGER,
            lossy INTEGER NOT NULL DEFAULT 0,
            specific_character_set TEXT NOT NULL DEFAULT '',
            calling_ae TEXT NOT NULL DEFAULT '',
            received_at TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX instances_series ON instances (series_pk, instance_number);
        CREATE INDEX instances_sop_class ON instances (sop_class_uid);
        """,
    ),
    (
        "0002_peers_audit",
        """
        CREATE TABLE peers (
            name TEXT PRIMARY KEY,
            aet TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            institution TEXT NOT NULL DEFAULT '',
            permissions TEXT NOT NULL DEFAULT 'echo,store,find,move,get',
            check_host INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX peers_aet ON peers (aet);

        CREATE TABLE audit (
            pk INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            peer_aet TEXT NOT NULL DEFAULT '',
            peer_name TEXT NOT NULL DEFAULT '',
            study_uid TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX audit_at ON audit (at);
        CREATE INDEX audit_study ON audit (study_uid);
        """,
    ),
    (
        "0003_qc_recognition",
        """
        CREATE TABLE study_qc (
            study_uid TEXT PRIMARY KEY,
            status TEXT NOT NULL DEFAULT 'pending',
            grade TEXT NOT NULL DEFAULT '',
            reviewer TEXT NOT NULL DEFAULT '',
            reviewed_at TEXT NOT NULL DEFAULT '',
            reason_code TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            ruleset_version TEXT NOT NULL DEFAULT '',
            checked_at TEXT NOT NULL DEFAULT '',
            outcomes TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX study_qc_status ON study_qc (status);

        CREATE TABLE qc_history (
            pk INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL,
            at TEXT NOT NULL,
            status TEXT NOT NULL,
            grade TEXT NOT NULL DEFAULT '',
            reviewer TEXT NOT NULL DEFAULT '',
            reason_code TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX qc_history_study ON qc_history (study_uid);

        CREATE TABLE shares (
            pk INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL,
            institution TEXT NOT NULL,
            granted_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            granted_by TEXT NOT NULL DEFAULT '',
            revoked_at TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX shares_study ON shares (study_uid, institution);

        CREATE TABLE recognition_decisions (
            pk INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL,
            decided_at TEXT NOT NULL,
            decision TEXT NOT NULL,
            reasons TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            consent TEXT NOT NULL DEFAULT '',
            informed TEXT NOT NULL DEFAULT '',
            physician TEXT NOT NULL DEFAULT '',
            deciding_institution TEXT NOT NULL DEFAULT '',
            producer TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            item_code TEXT NOT NULL DEFAULT '',
            advice_status TEXT NOT NULL DEFAULT '',
            advice_failed TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX recognition_decisions_study ON recognition_decisions (study_uid);
        CREATE INDEX recognition_decisions_at ON recognition_decisions (decided_at);

        CREATE TABLE advice_shown (
            pk INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            study_uid TEXT NOT NULL,
            viewer_institution TEXT NOT NULL DEFAULT '',
            producer TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            item_code TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            failed TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX advice_shown_at ON advice_shown (at);
        """,
    ),
    (
        "0004_peer_tls",
        """
        ALTER TABLE peers ADD COLUMN tls INTEGER NOT NULL DEFAULT 0
        """,
    ),
    (
        # Issue 12.2: a de-identified copy (Patient Identity Removed = YES, or a De-identification
        # Method) is never HR-eligible. Rows indexed before this migration read 0 until re-indexed.
        "0005_deidentified",
        """
        ALTER TABLE instances ADD COLUMN deidentified INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE studies ADD COLUMN deidentified INTEGER NOT NULL DEFAULT 0
        """,
    ),
    (
        # Issue 10 items 10/11: a peer may be bound to its TLS certificate, and the host check is
        # on by default. Rows written before had check_host = 0 only because that was the old
        # default (there was no way to say "any host" on purpose), so every peer registered with
        # a host gets the check: the safe reading. An admin opts a peer out again with
        # `pacsnode peer add NAME ... --any-host --replace`.
        "0006_peer_identity_binding",
        """
        ALTER TABLE peers ADD COLUMN cert_fingerprint TEXT NOT NULL DEFAULT '';
        ALTER TABLE peers ADD COLUMN cert_subject TEXT NOT NULL DEFAULT '';
        UPDATE peers SET check_host = 1 WHERE host != ''
        """,
    ),
    (
        # Issue 14 (DICOMweb): bearer tokens (only their SHA-256 is kept: a token is 256 random
        # bits, so a fast hash is enough and a stolen index yields no usable token), and per
        # instance the DICOM JSON metadata and frame offsets built at ingest, in the same
        # transaction as the instance row, so that /metadata and /frames read no file headers.
        "0010_web_tokens_instance_metadata",
        """
        CREATE TABLE web_tokens (
            name TEXT PRIMARY KEY,
            token_sha256 TEXT NOT NULL UNIQUE,
            institution TEXT NOT NULL DEFAULT '',
            peer_name TEXT NOT NULL DEFAULT '',
            permissions TEXT NOT NULL DEFAULT 'find,get',
            created_at TEXT NOT NULL,
            revoked_at TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE instance_metadata (
            sop_instance_uid TEXT PRIMARY KEY,
            metadata TEXT NOT NULL,
            frames TEXT NOT NULL DEFAULT ''
        );
        """,
    ),
    (
        # Issue 14 item 6: people who log in to the web side (argon2id password hashes) and their
        # sessions (only the SHA-256 of the session id is kept, like tokens).
        "0011_web_users_sessions",
        """
        CREATE TABLE web_users (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            institution TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at TEXT NOT NULL,
            disabled_at TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE web_sessions (
            session_sha256 TEXT PRIMARY KEY,
            user_name TEXT NOT NULL REFERENCES web_users (name) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        );
        CREATE INDEX web_sessions_user ON web_sessions (user_name);
        """,
    ),
    (
        # Who delivered each instance (THREATS.md rule 5). Rows stored before this migration
        # keep delivered_by '' ("unknown"): they vouch for no producer until an admin vouches.
        "0012_instance_provenance",
        """
        ALTER TABLE instances ADD COLUMN delivered_by TEXT NOT NULL DEFAULT '';
        ALTER TABLE instances ADD COLUMN delivered_peer TEXT NOT NULL DEFAULT '';
        ALTER TABLE instances ADD COLUMN delivered_institution TEXT NOT NULL DEFAULT '';

        CREATE TABLE producer_vouches (
            pk INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL,
            producer TEXT NOT NULL,
            note TEXT NOT NULL,
            vouched_by TEXT NOT NULL DEFAULT '',
            vouched_at TEXT NOT NULL
        );
        CREATE INDEX producer_vouches_study ON producer_vouches (study_uid)
        """,
    ),
    (
        # IOCM rejection notes: one row per (note, referenced instance), kept when the instance
        # is not here yet and applied when it arrives. instances.hidden is '' (normal view),
        # 'rejected' or 'rejection-note': peers never see a hidden instance.
        "0013_iocm_rejections",
        """
        ALTER TABLE instances ADD COLUMN hidden TEXT NOT NULL DEFAULT '';

        CREATE TABLE rejections (
            pk INTEGER PRIMARY KEY,
            note_uid TEXT NOT NULL,
            sop_instance_uid TEXT NOT NULL,
            study_uid TEXT NOT NULL DEFAULT '',
            series_uid TEXT NOT NULL DEFAULT '',
            reason_code TEXT NOT NULL,
            reason_meaning TEXT NOT NULL DEFAULT '',
            sender_kind TEXT NOT NULL DEFAULT '',
            sender_aet TEXT NOT NULL DEFAULT '',
            sender_peer TEXT NOT NULL DEFAULT '',
            sender_institution TEXT NOT NULL DEFAULT '',
            received_at TEXT NOT NULL,
            UNIQUE (note_uid, sop_instance_uid)
        );
        CREATE INDEX rejections_instance ON rejections (sop_instance_uid)
        """,
    ),
    (
        # Issue 16: indexes for C-FIND on person names that only one dialect can build. A name value
        # matches the whole name or any component group ("*=abc*"), so PostgreSQL gets trigram
        # indexes (pg_trgm) beside the b-trees; SQLite has no such index and keeps its scan.
        # The statements are in pacsnode.index.dialect.DIALECT_MIGRATIONS.
        "0014_name_search",
        "",
    ),
    (
        # Issue 15: failed logins counted in the index, so every worker of `serve --workers N`
        # sees the same count (a per-process count gave an attacker N x 5 tries). Rows older
        # than the window are deleted as new ones arrive.
        "0015_web_login_failures",
        """
        CREATE TABLE web_login_failures (
            pk INTEGER PRIMARY KEY,
            failure_key TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX web_login_failures_key ON web_login_failures (failure_key, at)
        """,
    ),
    (
        # Issue 15: how the patient was informed of a decline (signature, e-sign,
        # verbal-witnessed) is part of the decision's consent record, not only of the audit.
        "0016_decision_informed_how",
        """
        ALTER TABLE recognition_decisions ADD COLUMN informed_how TEXT NOT NULL DEFAULT ''
        """,
    ),
    (
        # Several nodes may share one archive (issue 16): each audit row says which node served.
        # Rows written before this migration keep node '' (the one node there was).
        "0017_audit_node",
        """
        ALTER TABLE audit ADD COLUMN node TEXT NOT NULL DEFAULT ''
        """,
    ),
    (
        # Background work (the stable-study QC pass) claimed by one node of several sharing the
        # index (index/work_queue.py): state ready → running (node, lease) → done, per generation.
        "0018_work_items",
        """
        CREATE TABLE work_items (
            kind TEXT NOT NULL,
            item TEXT NOT NULL,
            generation TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT 'ready',
            node TEXT NOT NULL DEFAULT '',
            lease_until TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            queued_at TEXT NOT NULL DEFAULT '',
            done_at TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (kind, item)
        );
        CREATE INDEX work_items_state ON work_items (kind, state, queued_at)
        """,
    ),    (
        # Issue 16: on PostgreSQL an instance is recorded by one server-side function call, so that
        # an ingest batch is one round trip (index/pg_store_sql.py, index/pg_store.py). SQLite runs
        # nothing; the function is in pacsnode.index.dialect.DIALECT_MIGRATIONS.
        "0019_pg_store_function",
        "",
    ),
]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def migrate(conn: sqlite3.Connection, migrations: list[tuple[str, str]] | None = None) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    conn.execute("BEGIN IMMEDIATE")  # the writer lock: two processes starting at once create it once
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    applied: list[str] = []
    for name, sql in migrations if migrations is not None else MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("ROLLBACK")  # another process applied it meanwhile
                continue
            for statement in migration_statements(name, sql, getattr(conn, "dialect", "sqlite")):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, utc_now()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
