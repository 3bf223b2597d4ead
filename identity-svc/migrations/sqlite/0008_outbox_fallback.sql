-- Where notify-svc sends a message instead if its channel refuses it for good (a first PIN half
-- whose SMS cannot be delivered goes to the email on file).
ALTER TABLE outbox ADD COLUMN fallback_channel TEXT;
ALTER TABLE outbox ADD COLUMN fallback_address TEXT;
