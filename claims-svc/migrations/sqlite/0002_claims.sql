-- The catalogue gains what submission decides on: the opening time (Unix ms), the reserved part
-- of each ceiling, the credential level, the incompatibility group (art. 31), the conditions
-- shown to citizens, and the higher amount of art. 25.
ALTER TABLE benefits ADD COLUMN reserved_cents INTEGER NOT NULL DEFAULT 0;
ALTER TABLE benefits ADD COLUMN opens_at INTEGER NOT NULL DEFAULT 1585692000000;
ALTER TABLE benefits ADD COLUMN min_level TEXT NOT NULL DEFAULT 'SIMPLIFIED';
ALTER TABLE benefits ADD COLUMN incompatibility_group TEXT NOT NULL DEFAULT 'INDEMNITY';
ALTER TABLE benefits ADD COLUMN conditions TEXT NOT NULL DEFAULT '';
ALTER TABLE benefits ADD COLUMN increased_amount_cents INTEGER NOT NULL DEFAULT 0;
ALTER TABLE benefits ADD COLUMN increased_amount_condition TEXT NOT NULL DEFAULT '';
UPDATE benefits SET conditions = 'Partita IVA o contratto co.co.co. attivi al 23/02/2020
Iscrizione alla Gestione separata
Non titolari di pensione né iscritti ad altre forme previdenziali obbligatorie' WHERE code = 'PROFESSIONISTI_COCOCO';
UPDATE benefits SET conditions = 'Iscrizione a una gestione speciale AGO (artigiani, commercianti, coltivatori diretti, coloni e mezzadri)
Non titolari di pensione né iscritti ad altre forme previdenziali obbligatorie, Gestione separata a parte' WHERE code = 'AUTONOMI_AGO';
UPDATE benefits SET conditions = 'Rapporto stagionale nel turismo o negli stabilimenti termali cessato involontariamente tra il 01/01/2019 e il 17/03/2020
Nessun rapporto di lavoro dipendente al 17/03/2020
Non titolari di pensione' WHERE code = 'STAGIONALI_TURISMO';
UPDATE benefits SET conditions = 'Almeno 50 giornate di lavoro agricolo nel 2019
Non titolari di pensione' WHERE code = 'AGRICOLI';
UPDATE benefits SET conditions = 'Almeno 30 contributi giornalieri al Fondo lavoratori dello spettacolo nel 2019
Reddito 2019 non superiore a 50.000 euro
Nessun rapporto di lavoro dipendente al 17/03/2020
Non titolari di pensione' WHERE code = 'SPETTACOLO';
UPDATE benefits SET conditions = 'Figli fino a 12 anni al 05/03/2020, o con disabilità grave senza limiti di età
In alternativa al congedo parentale COVID-19: un bonus per figlio, tra i due genitori',
    incompatibility_group = 'CHILD', increased_amount_cents = 100000,
    increased_amount_condition = 'Personale sanitario e del comparto sicurezza, difesa e soccorso pubblico (art. 25)'
    WHERE code = 'BONUS_BABY_SITTING';

-- What eligibility is decided on, one row per person: the registry row in canonical form (JSON),
-- so that importing the same file again changes nothing.
CREATE TABLE insured_positions (
    fiscal_code TEXT PRIMARY KEY,
    position    TEXT NOT NULL,
    imported_at INTEGER NOT NULL
);

CREATE TABLE claims (
    id                TEXT PRIMARY KEY,
    protocol_number   TEXT NOT NULL UNIQUE,
    -- The filer's id and the key the filer chose: a retry finds the claim it filed.
    idempotency_key   TEXT NOT NULL UNIQUE,
    -- Digest of the request that filed it: the same key with another request is refused.
    request_digest    TEXT NOT NULL,
    benefit_code      TEXT NOT NULL,
    fiscal_code       TEXT NOT NULL,
    filed_by_role     TEXT NOT NULL,
    filed_by_id       TEXT NOT NULL,
    status            TEXT NOT NULL,
    amount_cents      INTEGER NOT NULL,
    -- The account (NULL: cash at the post office).
    iban              TEXT,
    child_fiscal_code TEXT,
    -- Holds the claim's place in its incompatibility group (art. 31: one indemnity per person;
    -- one baby-sitting bonus per child); cleared when the claim is withdrawn or rejected.
    exclusive_key     TEXT UNIQUE,
    reasons           TEXT NOT NULL DEFAULT '',
    -- JSON {email, mobile_phone}: where the receipt and the decision go.
    contacts          TEXT NOT NULL,
    submitted_at      INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    -- The automatic decision: due from then, held by a decider until leased_until.
    decide_at         INTEGER,
    leased_until      INTEGER,
    decide_attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX claims_by_citizen ON claims (fiscal_code, submitted_at, id);
CREATE INDEX claims_by_filer ON claims (filed_by_id, submitted_at, id);
CREATE INDEX claims_by_status ON claims (status, submitted_at, id);
CREATE INDEX claims_to_decide ON claims (decide_at);

-- The last protocol number given each year.
CREATE TABLE protocol_counters (
    year INTEGER PRIMARY KEY,
    last INTEGER NOT NULL
);

-- Patronato mandates: a patronato files for a citizen only under a live one.
CREATE TABLE mandates (
    id                    TEXT PRIMARY KEY,
    patronato_id          TEXT NOT NULL,
    fiscal_code           TEXT NOT NULL,
    signed_form_reference TEXT NOT NULL,
    registered_at         INTEGER NOT NULL,
    revoked_at            INTEGER
);
CREATE INDEX mandates_by_citizen ON mandates (fiscal_code, registered_at);
CREATE INDEX mandates_by_patronato ON mandates (patronato_id, registered_at);

-- Notices to the citizen (receipt, decision, payment), written in the transaction of the change
-- they announce; the relay hands each to notify-svc with the row id as idempotency key.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    fiscal_code     TEXT NOT NULL,
    template        TEXT NOT NULL,
    channel         TEXT NOT NULL,
    address         TEXT NOT NULL,
    -- JSON object of the template's parameters.
    params          TEXT NOT NULL,
    traceparent     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    leased_until    INTEGER,
    message_id      TEXT,
    done_at         INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (done_at, next_attempt_at);

-- Every change by staff, and every staff read of a citizen's claim: append-only.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    operator_id TEXT NOT NULL,
    action      TEXT NOT NULL,
    fiscal_code TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_by_citizen ON audit_events (fiscal_code, id);
CREATE INDEX audit_events_by_operator ON audit_events (operator_id, id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
