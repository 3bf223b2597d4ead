-- One row per citizen who ever held a PIN, keyed by the canonical (non-omocode) fiscal code.
CREATE TABLE citizens (
    fiscal_code            TEXT PRIMARY KEY,
    -- SIMPLIFIED_ONLY (first PIN issued, its first half usable), ISSUED (16-char PIN from a
    -- recovery, awaiting first access), ACTIVE (the citizen's own PIN), REVOKED
    pin_state              TEXT NOT NULL,
    -- argon2id PHC strings; no PIN is ever stored in clear.
    pin_hash               TEXT NOT NULL,
    simplified_hash        TEXT,
    failed_attempts        BIGINT NOT NULL DEFAULT 0,
    locked_at              BIGINT,
    -- 1 once the citizen has replaced an initial PIN with their own: ripristino needs it.
    first_access_completed BIGINT NOT NULL DEFAULT 0,
    -- The contacts on file (JSON), from the request that issued the PIN or an operator's fix.
    contacts               TEXT NOT NULL,
    state_reason           TEXT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

-- Every PIN request, whatever its outcome.
CREATE TABLE pin_requests (
    id                  TEXT PRIMARY KEY,
    fiscal_code         TEXT NOT NULL,
    -- ISSUED or ALREADY_HAS_PIN
    outcome             TEXT NOT NULL,
    first_half_channel  TEXT NOT NULL,
    first_half_message  TEXT,
    second_half_message TEXT,
    -- PORTAL, or the id of the operator who filed it for a caller
    filed_by            TEXT NOT NULL,
    validated_by        TEXT,
    validated_at        BIGINT,
    created_at          BIGINT NOT NULL
);
CREATE INDEX pin_requests_by_citizen ON pin_requests (fiscal_code, created_at);
CREATE INDEX pin_requests_pending ON pin_requests (outcome, validated_at, created_at, id);

-- At most one pending ripristino per citizen; a new start replaces it.
CREATE TABLE recoveries (
    fiscal_code TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL,
    -- JSON: the two contacts the halves of the new PIN go to.
    targets     TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Operators' actions. Append-only: there is no code path that changes a row, and the database
-- refuses one too.
CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    operator_id TEXT NOT NULL,
    action      TEXT NOT NULL,
    fiscal_code TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_by_citizen ON audit_events (fiscal_code, id);
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
