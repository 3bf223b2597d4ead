-- Sessions issued at login. The refresh token is stored only as a SHA-256 hash (it is 256 random
-- bits, so a slow hash adds nothing).
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    subject            TEXT NOT NULL,
    role               TEXT NOT NULL,
    level              TEXT NOT NULL,
    amr                TEXT NOT NULL,
    acr                TEXT,
    refresh_hash       TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    refresh_expires_at BIGINT NOT NULL,
    previous_access_at BIGINT,
    revoked_at         BIGINT
);
CREATE INDEX sessions_by_subject ON sessions (subject, created_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at);

-- Contact-center operators, patronato offices and back office: never a citizen's credential.
CREATE TABLE staff (
    username        TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_at       BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- ORDINARY for every PIN until conversion to PIN dispositivo exists.
ALTER TABLE citizens ADD COLUMN pin_level TEXT NOT NULL DEFAULT 'ORDINARY';
