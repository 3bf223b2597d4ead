-- Dispatch: who holds a message while sending it, and what the provider answered.
-- A worker that dies while sending leaves lease_until in the past, so another takes the message.
ALTER TABLE messages ADD COLUMN lease_until BIGINT;
ALTER TABLE messages ADD COLUMN provider TEXT;
ALTER TABLE messages ADD COLUMN provider_message_id TEXT;
ALTER TABLE messages ADD COLUMN sent_at BIGINT;
ALTER TABLE messages ADD COLUMN delivered_at BIGINT;
CREATE INDEX messages_by_provider_id ON messages (provider, provider_message_id);
