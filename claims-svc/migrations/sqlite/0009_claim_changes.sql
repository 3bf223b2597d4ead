-- Live status (WatchMyClaims): every change a citizen can see of their claims is logged with
-- its fiscal code, in the transaction of the change, for the watchers of every process on this
-- file (platform::changes reads it; old rows are pruned). A change rolled back logs nothing.
CREATE TABLE claim_changes (
    seq     INTEGER PRIMARY KEY,
    subject TEXT NOT NULL
);
CREATE TRIGGER claims_changed_on_insert AFTER INSERT ON claims
BEGIN
    INSERT INTO claim_changes (subject) VALUES (NEW.fiscal_code);
END;
CREATE TRIGGER claims_changed_on_update
AFTER UPDATE OF status, reasons, iban, redeemed_at, updated_at ON claims
WHEN OLD.status IS NOT NEW.status OR OLD.reasons IS NOT NEW.reasons
    OR OLD.iban IS NOT NEW.iban OR OLD.redeemed_at IS NOT NEW.redeemed_at
    OR OLD.updated_at IS NOT NEW.updated_at
BEGIN
    INSERT INTO claim_changes (subject) VALUES (NEW.fiscal_code);
END;
