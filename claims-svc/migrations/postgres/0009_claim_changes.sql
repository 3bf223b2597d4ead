-- Live status (WatchMyClaims): every change a citizen can see of their claims is announced on
-- channel sportello_claims_changes with the claim's fiscal code, by NOTIFY in the transaction of
-- the change (delivered at commit, to the watchers of every instance; a change rolled back
-- announces nothing; several changes of one citizen in one transaction are one notification).
CREATE FUNCTION claims_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sportello_claims_changes', NEW.fiscal_code);
    RETURN NULL;
END
$$;
CREATE TRIGGER claims_changed_on_insert AFTER INSERT ON claims
FOR EACH ROW EXECUTE FUNCTION claims_announce_change();
CREATE TRIGGER claims_changed_on_update
AFTER UPDATE OF status, reasons, iban, redeemed_at, updated_at ON claims
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.reasons IS DISTINCT FROM NEW.reasons
    OR OLD.iban IS DISTINCT FROM NEW.iban OR OLD.redeemed_at IS DISTINCT FROM NEW.redeemed_at
    OR OLD.updated_at IS DISTINCT FROM NEW.updated_at)
EXECUTE FUNCTION claims_announce_change();
