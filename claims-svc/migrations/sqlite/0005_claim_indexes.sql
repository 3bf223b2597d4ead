-- Fewer indexes keyed at random, for click day: every index whose key is spread over the whole
-- tree costs each batch one page of log per claim. The idempotency key is now unique per
-- applicant (one index serves both the retry lookup and the citizen's list), and only patronato
-- filings are indexed by filer. SQLite cannot drop a column's UNIQUE, hence the copy.
CREATE TABLE claims_new (
    id                TEXT PRIMARY KEY,
    protocol_number   TEXT NOT NULL UNIQUE,
    idempotency_key   TEXT NOT NULL,
    request_digest    TEXT NOT NULL,
    benefit_code      TEXT NOT NULL,
    fiscal_code       TEXT NOT NULL,
    filed_by_role     TEXT NOT NULL,
    filed_by_id       TEXT NOT NULL,
    status            TEXT NOT NULL,
    amount_cents      INTEGER NOT NULL,
    iban              TEXT,
    child_fiscal_code TEXT,
    exclusive_key     TEXT UNIQUE,
    reasons           TEXT NOT NULL DEFAULT '',
    contacts          TEXT NOT NULL,
    submitted_at      INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    decide_at         INTEGER,
    leased_until      INTEGER,
    decide_attempts   INTEGER NOT NULL DEFAULT 0,
    redeemed_at       INTEGER,
    payment_batch_id  TEXT
);
INSERT INTO claims_new (id, protocol_number, idempotency_key, request_digest, benefit_code,
    fiscal_code, filed_by_role, filed_by_id, status, amount_cents, iban, child_fiscal_code,
    exclusive_key, reasons, contacts, submitted_at, updated_at, decide_at, leased_until,
    decide_attempts, redeemed_at, payment_batch_id)
SELECT id, protocol_number, idempotency_key, request_digest, benefit_code,
    fiscal_code, filed_by_role, filed_by_id, status, amount_cents, iban, child_fiscal_code,
    exclusive_key, reasons, contacts, submitted_at, updated_at, decide_at, leased_until,
    decide_attempts, redeemed_at, payment_batch_id
FROM claims ORDER BY rowid;
DROP TABLE claims;
ALTER TABLE claims_new RENAME TO claims;
CREATE UNIQUE INDEX claims_by_citizen ON claims (fiscal_code, idempotency_key);
CREATE INDEX claims_by_patronato ON claims (filed_by_id, submitted_at, id)
    WHERE filed_by_role = 'PATRONATO';
CREATE INDEX claims_by_status ON claims (status, submitted_at, id);
CREATE INDEX claims_to_decide ON claims (decide_at);
CREATE INDEX claims_by_payment_batch ON claims (payment_batch_id);
