-- Live status (WatchMyPinRequest): every change a citizen can see of their PIN request (a new
-- request, the message ids of its halves, a validation) or of their credential's first access
-- is logged with the fiscal code, in the transaction of the change, for the watchers of every
-- process on this file (platform::changes reads it; old rows are pruned).
CREATE TABLE identity_changes (
    seq     INTEGER PRIMARY KEY,
    subject TEXT NOT NULL
);
CREATE TRIGGER pin_requests_changed_on_insert AFTER INSERT ON pin_requests
BEGIN
    INSERT INTO identity_changes (subject) VALUES (NEW.fiscal_code);
END;
CREATE TRIGGER pin_requests_changed_on_update
AFTER UPDATE OF outcome, first_half_message, second_half_message, validated_at ON pin_requests
BEGIN
    INSERT INTO identity_changes (subject) VALUES (NEW.fiscal_code);
END;
CREATE TRIGGER credentials_changed_on_first_access
AFTER UPDATE OF first_access_completed ON citizens
WHEN OLD.first_access_completed IS NOT NEW.first_access_completed
BEGIN
    INSERT INTO identity_changes (subject) VALUES (NEW.fiscal_code);
END;
