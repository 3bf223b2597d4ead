-- The institute's register of residents (anagrafe): who lives where, loaded in bulk by the back
-- office. The second half of a PIN is posted only to the residence recorded here.
CREATE TABLE residents (
    -- canonical (non-omocode) fiscal code
    fiscal_code        TEXT PRIMARY KEY,
    surname            TEXT NOT NULL,
    given_name         TEXT NOT NULL,
    birth_date         TEXT NOT NULL,
    -- M or F
    sex                TEXT NOT NULL,
    -- Belfiore code of the birthplace (municipality, or Z… for a foreign country)
    birthplace         TEXT NOT NULL,
    -- Italy: street, street number, CAP, province and the municipality's Belfiore code;
    -- abroad: the country's Belfiore code (Z…) and a free-form address.
    street             TEXT,
    street_number      TEXT,
    postal_code        TEXT,
    province           TEXT,
    municipality       TEXT,
    country            TEXT,
    foreign_address    TEXT,
    updated_at         BIGINT NOT NULL
);

-- What the request form said, kept for the operator who verifies a caller and calls back (JSON
-- of the anagrafica and residence; the preferred phone and time slot), and what the register said.
ALTER TABLE pin_requests ADD COLUMN form TEXT;
ALTER TABLE pin_requests ADD COLUMN contacts TEXT;
ALTER TABLE pin_requests ADD COLUMN preferred_phone TEXT;
ALTER TABLE pin_requests ADD COLUMN preferred_time_slot TEXT;
-- ON_REGISTER, ANAGRAFICA_MISMATCH, NOT_ON_REGISTER or FOREIGN_RESIDENCE (NULL: before the register)
ALTER TABLE pin_requests ADD COLUMN register_check TEXT;
-- Set while the request waits for the contact center's validation: why.
ALTER TABLE pin_requests ADD COLUMN pending_reason TEXT;

-- How many initial PINs this citizen was ever issued: a citizen who had one (even revoked before
-- first access) never gets the simplified half again.
ALTER TABLE citizens ADD COLUMN pins_issued BIGINT NOT NULL DEFAULT 1;
