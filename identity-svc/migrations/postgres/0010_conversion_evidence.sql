-- PIN dispositivo on evidence an attacker does not have (the identity-document registry's
-- verdict), a hold during which a granted conversion can be revoked, and uploads whose files
-- are accounted for.

-- What the document registry said: MATCH, NO_MATCH, UNKNOWN, or UNAVAILABLE (no answer, or no
-- registry configured); NULL before an upload.
ALTER TABLE pin_conversions ADD COLUMN document_check TEXT;
ALTER TABLE pin_conversions ADD COLUMN revoked_at BIGINT;
ALTER TABLE pin_conversions ADD COLUMN revoked_by TEXT;
CREATE INDEX pin_conversions_by_form_blob ON pin_conversions (signed_form_blob);
CREATE INDEX pin_conversions_by_document_blob ON pin_conversions (document_blob);

-- Uploads in progress: the bytes each has received (a citizen's pending uploads are bounded) and
-- the files it has stored so far, which nothing may delete while it runs. A row outlives its
-- upload only when the process died: the sweep removes it after an hour.
CREATE TABLE conversion_uploads (
    id          TEXT PRIMARY KEY,
    fiscal_code TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    form_blob   TEXT,
    scan_blob   TEXT,
    started_at  BIGINT NOT NULL
);
CREATE INDEX conversion_uploads_by_citizen ON conversion_uploads (fiscal_code);
CREATE INDEX conversion_uploads_by_form_blob ON conversion_uploads (form_blob);
CREATE INDEX conversion_uploads_by_scan_blob ON conversion_uploads (scan_blob);
CREATE INDEX conversion_uploads_by_start ON conversion_uploads (started_at);

-- One row per stored file name, locked by whoever claims the file for an upload or decides it is
-- unreferenced and deletes it: the two can never interleave.
CREATE TABLE upload_blobs (
    digest    TEXT PRIMARY KEY,
    locked_at BIGINT NOT NULL
);
