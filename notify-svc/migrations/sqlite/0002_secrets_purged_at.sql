-- When the dispatcher purged the message's secret parameters (milliseconds since the epoch);
-- NULL while they are kept. A message whose secrets are purged can no longer be resent.
ALTER TABLE messages ADD COLUMN secrets_purged_at INTEGER;
