-- A staff lockout expires (each one longer than the last, until a successful login or an
-- administrator's unlock); staff removed from the configuration are disabled, not deleted, so
-- that the audit trail still names them.
ALTER TABLE staff ADD COLUMN locked_until INTEGER;
ALTER TABLE staff ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE staff ADD COLUMN disabled_at INTEGER;
-- The permanent locks of before lift: from now on a lock expires.
UPDATE staff SET locked_at = NULL, failed_attempts = 0;
