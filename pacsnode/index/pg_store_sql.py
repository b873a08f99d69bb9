"""The server-side half of ingest on PostgreSQL: one function call records one instance.

Installed by the PostgreSQL-only migration ``0019_pg_store_function`` (``dialect.DIALECT_MIGRATIONS``);
called by :mod:`pacsnode.index.pg_store` (the whole batch, BEGIN to COMMIT, in one round trip).

It does what ``SqliteIndex._record`` does for a new instance or a kept-first duplicate, statement
for statement (``test_matching`` and the PostgreSQL ingest tests hold both to the same rows):

* already there and ``keep_first``: ``duplicate`` (and the stored path, for the caller's orphan);
  already there otherwise: ``existing``, nothing written: the caller replaces it through the shared
  SQL (a rare path: the recount of ``_refresh_counts``);
* otherwise the patient, study and series rows are found or created (blank patient fields and the
  study's flags filled as ``_upsert_*`` do), the instance row is inserted with who delivered it and
  hidden when a kept rejection note is honoured for it (``rejections.apply_on_arrival``), its
  DICOMweb metadata is written, and the series' and study's counts (and the study's modalities for
  a new series) move: ``stored``.

Each call is a subtransaction (the EXCEPTION block): an instance that fails is undone alone and
answers ``failed`` with the error; one that lost a race for a new row to another node (a UNIQUE
violation: the other transaction committed it meanwhile) is tried again and now finds that row
(READ COMMITTED: each statement of the function sees what committed before it began). A deadlock
is raised: the caller's batch is rolled back and run again.

The text is frozen with its migration name: a change is a new migration that replaces the function
(``CREATE OR REPLACE``), so that nodes of one version share one definition. Types are lower case:
``dialect.pg_ddl`` rewrites upper-case ``TEXT`` and ``INTEGER`` (column definitions) only.
"""

from __future__ import annotations

#: The function's arguments, in call order (pg_store builds its parameters in this order). At most 50:
#: psycopg parses a statement with more parameters again at every call (~0.2 ms of the node's CPU), so
#: the other patient IDs and the codes are one flat array each.
ARGUMENTS = (
    ("p_now", "text"), ("p_keep_first", "boolean"), ("p_calling_ae", "text"),
    ("p_sop", "text"), ("p_sop_class", "text"), ("p_instance_number", "bigint"), ("p_transfer_syntax", "text"),
    ("p_path", "text"), ("p_size", "bigint"), ("p_sha256", "text"), ("p_frames", "bigint"), ("p_lossy", "bigint"),
    ("p_charset", "text"), ("p_deidentified", "bigint"),
    ("p_delivered_by", "text"), ("p_delivered_peer", "text"), ("p_delivered_institution", "text"),
    ("p_patient_id", "text"), ("p_issuer", "text"), ("p_patient_name", "text"), ("p_patient_name_folded", "text"),
    ("p_birth_date", "text"), ("p_sex", "text"),
    ("p_other_ids", "text[]"),
    ("p_study_uid", "text"), ("p_study_date", "text"), ("p_study_time", "text"), ("p_accession", "text"),
    ("p_study_id", "text"), ("p_study_description", "text"), ("p_referring", "text"),
    ("p_referring_folded", "text"), ("p_institution_name", "text"), ("p_institution_code", "text"),
    ("p_body_part", "text"), ("p_contrast", "bigint"),
    ("p_codes", "text[]"),
    ("p_series_uid", "text"), ("p_modality", "text"), ("p_series_number", "bigint"),
    ("p_series_description", "text"), ("p_series_date", "text"), ("p_series_time", "text"),
    ("p_station", "text"), ("p_device_serial", "text"),
    ("p_metadata", "text"), ("p_frames_json", "text"),
)

_BODY = r"""
DECLARE
    v_try int;
    v_instance bigint;
    v_patient bigint;
    v_study bigint;
    v_series bigint;
    v_new_series boolean;
    v_hidden text;
    v_row record;
BEGIN
    FOR v_try IN 1..3 LOOP
        BEGIN
            SELECT i.path INTO v_row FROM instances i WHERE i.sop_instance_uid = p_sop;
            IF FOUND THEN
                IF p_keep_first THEN
                    result := 'duplicate';
                    existing_path := v_row.path;
                ELSE
                    result := 'existing';
                END IF;
                RETURN;
            END IF;

            SELECT pk, patient_name, birth_date, sex INTO v_row FROM patients
                WHERE patient_id = p_patient_id AND issuer = p_issuer;
            IF NOT FOUND THEN
                INSERT INTO patients (patient_id, issuer, patient_name, patient_name_folded, birth_date, sex)
                    VALUES (p_patient_id, p_issuer, p_patient_name, p_patient_name_folded, p_birth_date, p_sex)
                    RETURNING pk INTO v_patient;
            ELSE
                v_patient := v_row.pk;
                IF (v_row.patient_name = '' AND p_patient_name <> '') OR (v_row.birth_date = '' AND p_birth_date <> '')
                        OR (v_row.sex = '' AND p_sex <> '') THEN
                    UPDATE patients SET
                        patient_name = CASE WHEN patient_name = '' THEN p_patient_name ELSE patient_name END,
                        patient_name_folded = CASE WHEN patient_name = '' THEN p_patient_name_folded
                                                   ELSE patient_name_folded END,
                        birth_date = CASE WHEN birth_date = '' THEN p_birth_date ELSE birth_date END,
                        sex = CASE WHEN sex = '' THEN p_sex ELSE sex END
                        WHERE pk = v_patient;
                END IF;
            END IF;
            IF cardinality(p_other_ids) > 0 THEN  -- (other_id, other_issuer, type_of_id) after each other
                INSERT INTO patient_other_ids (patient_pk, other_id, other_issuer, type_of_id)
                    SELECT v_patient, p_other_ids[3 * k - 2], p_other_ids[3 * k - 1], p_other_ids[3 * k]
                    FROM generate_series(1, cardinality(p_other_ids) / 3) AS k ORDER BY k
                    ON CONFLICT DO NOTHING;
            END IF;

            SELECT pk INTO v_study FROM studies WHERE study_uid = p_study_uid;
            IF NOT FOUND THEN
                INSERT INTO studies (study_uid, patient_pk, study_date, study_time, accession_number, study_id,
                        study_description, referring_physician, referring_physician_folded, institution_name,
                        institution_code, body_parts, contrast, lossy, calling_ae, received_at, updated_at,
                        specific_character_set, deidentified)
                    VALUES (p_study_uid, v_patient, p_study_date, p_study_time, p_accession, p_study_id,
                        p_study_description, p_referring, p_referring_folded, p_institution_name,
                        p_institution_code, p_body_part, p_contrast, p_lossy, p_calling_ae, p_now, p_now,
                        p_charset, p_deidentified)
                    RETURNING pk INTO v_study;
            ELSE
                UPDATE studies SET
                    institution_name = CASE WHEN institution_name = '' THEN p_institution_name ELSE institution_name END,
                    institution_code = CASE WHEN institution_code = '' THEN p_institution_code ELSE institution_code END,
                    contrast = GREATEST(contrast, p_contrast), lossy = GREATEST(lossy, p_lossy),
                    deidentified = GREATEST(deidentified, p_deidentified)
                    WHERE pk = v_study AND ((institution_name = '' AND p_institution_name <> '')
                        OR (institution_code = '' AND p_institution_code <> '') OR contrast < p_contrast
                        OR lossy < p_lossy OR deidentified < p_deidentified);
            END IF;
            IF cardinality(p_codes) > 0 THEN  -- (kind, code_value, scheme, meaning) after each other
                INSERT INTO study_codes (study_pk, kind, code_value, scheme, meaning)
                    SELECT v_study, p_codes[4 * k - 3], p_codes[4 * k - 2], p_codes[4 * k - 1], p_codes[4 * k]
                    FROM generate_series(1, cardinality(p_codes) / 4) AS k ORDER BY k
                    ON CONFLICT DO NOTHING;
            END IF;

            SELECT pk INTO v_series FROM series WHERE series_uid = p_series_uid;
            v_new_series := NOT FOUND;
            IF v_new_series THEN
                INSERT INTO series (series_uid, study_pk, modality, body_part, series_number, series_description,
                        series_date, series_time, institution_name, station_name, device_serial)
                    VALUES (p_series_uid, v_study, p_modality, p_body_part, p_series_number, p_series_description,
                        p_series_date, p_series_time, p_institution_name, p_station, p_device_serial)
                    RETURNING pk INTO v_series;
            END IF;

            -- rejections.apply_on_arrival: a kept note hides the instance if the note is honoured for it
            v_hidden := CASE WHEN EXISTS (SELECT 1 FROM rejections r WHERE r.sop_instance_uid = p_sop
                    AND (r.sender_kind IN ('import', 'own')
                         OR (r.sender_institution <> '' AND r.sender_institution = p_delivered_institution)))
                THEN 'rejected' ELSE '' END;
            INSERT INTO instances (sop_instance_uid, series_pk, sop_class_uid, instance_number, transfer_syntax,
                    path, size, sha256, number_of_frames, lossy, specific_character_set, calling_ae, received_at,
                    deidentified, delivered_by, delivered_peer, delivered_institution, hidden)
                VALUES (p_sop, v_series, p_sop_class, p_instance_number, p_transfer_syntax, p_path, p_size,
                    p_sha256, p_frames, p_lossy, p_charset, p_calling_ae, p_now, p_deidentified, p_delivered_by,
                    p_delivered_peer, p_delivered_institution, v_hidden)
                RETURNING pk INTO v_instance;
            IF p_metadata IS NOT NULL THEN
                INSERT INTO instance_metadata (sop_instance_uid, metadata, frames) VALUES (p_sop, p_metadata, p_frames_json)
                    ON CONFLICT (sop_instance_uid) DO UPDATE SET metadata = EXCLUDED.metadata, frames = EXCLUDED.frames;
            END IF;

            UPDATE series SET instance_count = instance_count + 1 WHERE pk = v_series;
            IF v_new_series THEN
                UPDATE studies SET instance_count = instance_count + 1, series_count = series_count + 1,
                    size_bytes = size_bytes + p_size, updated_at = p_now,
                    modalities = COALESCE((SELECT string_agg(DISTINCT s.modality, chr(92) ORDER BY s.modality)
                                           FROM series s WHERE s.study_pk = v_study AND s.modality <> ''), ''),
                    body_parts = COALESCE((SELECT string_agg(DISTINCT s.body_part, chr(92) ORDER BY s.body_part)
                                           FROM series s WHERE s.study_pk = v_study AND s.body_part <> ''), '')
                    WHERE pk = v_study;
            ELSE
                UPDATE studies SET instance_count = instance_count + 1, size_bytes = size_bytes + p_size,
                    updated_at = p_now WHERE pk = v_study;
            END IF;
            result := 'stored';
            RETURN;
        EXCEPTION
            WHEN deadlock_detected THEN
                RAISE;
            WHEN unique_violation THEN
                IF v_try = 3 THEN
                    result := 'failed';
                    error := SQLSTATE || ' ' || SQLERRM;
                    RETURN;
                END IF;
            WHEN OTHERS THEN
                result := 'failed';
                error := SQLSTATE || ' ' || SQLERRM;
                RETURN;
        END;
    END LOOP;
END
"""


def create_function() -> str:
    """``CREATE OR REPLACE FUNCTION pacsnode_store_instance(...)`` as the migration runs it."""
    arguments = ", ".join(f"{name} {kind}" for name, kind in ARGUMENTS)
    return (f"CREATE OR REPLACE FUNCTION pacsnode_store_instance({arguments}, OUT result text, "
            f"OUT existing_path text, OUT error text) LANGUAGE plpgsql AS $pacsnode$" + _BODY + "$pacsnode$")


#: The migration's statements (PostgreSQL only; SQLite records the name and runs nothing).
MIGRATION = [create_function()]
