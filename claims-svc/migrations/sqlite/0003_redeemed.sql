-- When an approved baby-sitting bonus was redeemed (Libretto Famiglia registration).
ALTER TABLE claims ADD COLUMN redeemed_at INTEGER;
