-- A courtesy channel for a message its own channel refuses for good, and the message sent there.
ALTER TABLE messages ADD COLUMN fallback_channel TEXT;
ALTER TABLE messages ADD COLUMN fallback_address TEXT;
ALTER TABLE messages ADD COLUMN fallback_message_id TEXT;
-- Receipts name a message by its provider's id.
CREATE INDEX messages_by_provider_message_id ON messages (provider_message_id);

-- Operators' lookups of citizens' messages: append-only.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    operator_id TEXT NOT NULL,
    action      TEXT NOT NULL,
    fiscal_code TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_by_citizen ON audit_events (fiscal_code, id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
