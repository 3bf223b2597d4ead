-- One row per citizen who ever held a credential, keyed by the canonical (non-omocode) fiscal code.
CREATE TABLE citizens (
    fiscal_code     TEXT PRIMARY KEY,
    -- ISSUED (initial PIN sent, never used), ACTIVE, LOCKED, REVOKED
    pin_state       TEXT NOT NULL,
    -- argon2id PHC strings; the PIN itself is never stored.
    pin_hash        TEXT NOT NULL,
    simplified_hash TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Every PIN request, as received (contacts kept for re-sending and for the operators' view).
CREATE TABLE pin_requests (
    id                 TEXT PRIMARY KEY,
    fiscal_code        TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    first_half_channel TEXT NOT NULL,
    contacts           TEXT NOT NULL,
    first_half_message TEXT,
    created_at         INTEGER NOT NULL
);
CREATE INDEX pin_requests_by_citizen ON pin_requests (fiscal_code, created_at);
