-- The benefits that can be claimed. Amounts and ceilings in euro cents.
CREATE TABLE benefits (
    code                   TEXT PRIMARY KEY,
    position               BIGINT NOT NULL,
    title                  TEXT NOT NULL,
    legal_basis            TEXT NOT NULL,
    amount_cents           BIGINT NOT NULL,
    ceiling_cents          BIGINT NOT NULL,
    simplified_pin_allowed BIGINT NOT NULL
);

-- DL 18/2020 ("Cura Italia"): the six COVID-19 benefits of DOMAIN.md §5, with the ceilings
-- commonly reported for 2020. The baby-sitting bonus draws on a fund shared with parental leave,
-- so it has no ceiling of its own here.
INSERT INTO benefits VALUES
  ('PROFESSIONISTI_COCOCO', 1, 'Indennità professionisti e co.co.co. (Gestione separata)', 'DL 18/2020 art. 27', 60000, 20340000000, 1),
  ('AUTONOMI_AGO', 2, 'Indennità lavoratori autonomi iscritti all''AGO', 'DL 18/2020 art. 28', 60000, 216000000000, 1),
  ('STAGIONALI_TURISMO', 3, 'Indennità lavoratori stagionali del turismo e degli stabilimenti termali', 'DL 18/2020 art. 29', 60000, 10380000000, 1),
  ('AGRICOLI', 4, 'Indennità lavoratori del settore agricolo', 'DL 18/2020 art. 30', 60000, 39600000000, 1),
  ('SPETTACOLO', 5, 'Indennità lavoratori dello spettacolo', 'DL 18/2020 art. 38', 60000, 4860000000, 1),
  ('BONUS_BABY_SITTING', 6, 'Bonus per servizi di baby-sitting', 'DL 18/2020 artt. 23 e 25', 60000, 0, 1);
