-- Payment batches: the approved claims ordered for payment together, the SEPA file sent to the
-- bank for the transfers among them, and when the batch was confirmed paid.
CREATE TABLE payment_batches (
    id             TEXT PRIMARY KEY,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    execution_date TEXT NOT NULL,
    transfers      INTEGER NOT NULL,
    cash           INTEGER NOT NULL,
    total_cents    INTEGER NOT NULL,
    sepa_xml       TEXT NOT NULL,
    confirmed_at   INTEGER
);
ALTER TABLE claims ADD COLUMN payment_batch_id TEXT;
CREATE INDEX claims_by_payment_batch ON claims (payment_batch_id);
