-- Requests to convert an ordinary PIN into a PIN dispositivo. At most one open request per
-- citizen (AWAITING_DOCUMENTS or IN_REVIEW); the files are blobs named by their SHA-256.
CREATE TABLE pin_conversions (
    id                   TEXT PRIMARY KEY,
    request_number       TEXT NOT NULL UNIQUE,
    fiscal_code          TEXT NOT NULL,
    guardian_fiscal_code TEXT,
    -- AWAITING_DOCUMENTS, IN_REVIEW, APPROVED, REJECTED, WITHDRAWN
    status               TEXT NOT NULL,
    -- JSON of the identity document as described at upload
    document             TEXT,
    signed_form_blob     TEXT,
    signed_form_type     TEXT,
    document_blob        TEXT,
    document_type        TEXT,
    -- comma-separated names of the automatic checks that failed
    failed_checks        TEXT NOT NULL DEFAULT '',
    rejection_reason     TEXT NOT NULL DEFAULT '',
    decided_by           TEXT,
    requested_at         BIGINT NOT NULL,
    uploaded_at          BIGINT,
    decided_at           BIGINT
);
CREATE INDEX pin_conversions_by_citizen ON pin_conversions (fiscal_code, requested_at);
CREATE UNIQUE INDEX pin_conversions_one_open ON pin_conversions (fiscal_code)
    WHERE status IN ('AWAITING_DOCUMENTS', 'IN_REVIEW');
CREATE INDEX pin_conversions_queue ON pin_conversions (status, uploaded_at, id);

-- The last request number given each year.
CREATE TABLE conversion_counters (
    year BIGINT PRIMARY KEY,
    last BIGINT NOT NULL
);
