-- Every message accepted by EnqueueMessage, from acceptance to its final outcome.
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    fiscal_code     TEXT NOT NULL,
    channel         TEXT NOT NULL,
    address         TEXT NOT NULL,
    template        TEXT NOT NULL,
    params          TEXT NOT NULL,
    -- PIN halves and the like: NULL once the message has been sent.
    secret_params   TEXT,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX messages_due ON messages (status, next_attempt_at);
CREATE INDEX messages_by_citizen ON messages (fiscal_code, created_at);
