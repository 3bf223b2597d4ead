-- Identity providers' ID tokens already used for a login, remembered until they expire so that
-- a replayed one is refused by every identity-svc instance.
CREATE TABLE used_id_tokens (
    token_key  TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_id_tokens_expiry ON used_id_tokens (expires_at);
