-- A courtesy channel for a message its own channel refuses for good, and the message sent there.
ALTER TABLE messages ADD COLUMN fallback_channel TEXT;
ALTER TABLE messages ADD COLUMN fallback_address TEXT;
ALTER TABLE messages ADD COLUMN fallback_message_id TEXT;
-- Receipts name a message by its provider's id.
CREATE INDEX messages_by_provider_message_id ON messages (provider_message_id);

-- Operators' lookups of citizens' messages: append-only.
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
