-- Messages to send, written in the same transaction as the change they announce; the relay
-- hands each to notify-svc with the row id as idempotency key until notify acknowledges it.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    fiscal_code     TEXT NOT NULL,
    template        TEXT NOT NULL,
    -- SMS, EMAIL, PEC or POST, and the address (a postal block for POST).
    channel         TEXT NOT NULL,
    address         TEXT NOT NULL,
    -- JSON object of secret parameters (a PIN half, a code): cleared once notify has it.
    secret_params   TEXT,
    -- A re-send of this notify message (same secret, stored by notify) instead of a new one.
    resend_of       TEXT,
    -- The PIN request whose first or second half this message carries (FIRST, SECOND).
    request_id      TEXT,
    request_half    TEXT,
    -- W3C traceparent of the action that wrote the row: its delivery joins that trace.
    traceparent     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- A relay holds the row until then; another may take it afterwards.
    leased_until    INTEGER,
    message_id      TEXT,
    done_at         INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (done_at, next_attempt_at);

-- Fixed-window counters per fiscal code (notices sent on anonymous calls, recovery starts).
CREATE TABLE rate_limits (
    fiscal_code  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (fiscal_code, kind)
);

-- An operator's own trail (actions on no single citizen, such as listing the queue).
CREATE INDEX audit_events_by_operator ON audit_events (operator_id, id);
