-- "Who looked at my data" (issue 25): the citizen reads their own trail, newest first and by
-- period, and sees the role of whoever acted (NULL on rows written before roles were recorded:
-- the service tells them from the actor).
ALTER TABLE audit_events ADD COLUMN actor_role TEXT;
CREATE INDEX audit_events_by_citizen_time ON audit_events (fiscal_code, at, id);
