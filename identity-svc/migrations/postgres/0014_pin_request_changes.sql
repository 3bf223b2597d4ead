-- Live status (WatchMyPinRequest): every change a citizen can see of their PIN request (a new
-- request, the message ids of its halves, a validation) or of their credential's first access
-- is announced on channel sportello_identity_changes with the fiscal code, by NOTIFY in the
-- transaction of the change (delivered at commit to every instance; nothing if rolled back).
CREATE FUNCTION identity_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sportello_identity_changes', NEW.fiscal_code);
    RETURN NULL;
END
$$;
CREATE TRIGGER pin_requests_changed_on_insert AFTER INSERT ON pin_requests
FOR EACH ROW EXECUTE FUNCTION identity_announce_change();
CREATE TRIGGER pin_requests_changed_on_update
AFTER UPDATE OF outcome, first_half_message, second_half_message, validated_at ON pin_requests
FOR EACH ROW EXECUTE FUNCTION identity_announce_change();
CREATE TRIGGER credentials_changed_on_first_access
AFTER UPDATE OF first_access_completed ON citizens
FOR EACH ROW WHEN (OLD.first_access_completed IS DISTINCT FROM NEW.first_access_completed)
EXECUTE FUNCTION identity_announce_change();
