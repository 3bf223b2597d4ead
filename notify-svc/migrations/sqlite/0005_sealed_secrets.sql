-- Secret parameters are sealed before they are written (`sportello_platform::sealed`):
-- `secret_params` holds the ciphertext, and this the id of the data key that sealed it
-- (`data_dir/keys/secrets-<id>.key`). Rows written before it are sealed at start.
ALTER TABLE messages ADD COLUMN secrets_key TEXT;
