-- Issue 15 (wallets at database speed), sqlite dialect. Kept column-for-column identical to the other dialect.
--
-- POST /v1/users/{user_id}/wallet keeps the Idempotency-Key of the request that creates a wallet
-- on the wallet row, as payments do, instead of in the generic claim table: reserving then
-- writes the key with the row (one transaction) and completing rewrites it to the completing
-- request's key with the public key (one more), so a new wallet costs two commits, not four.
-- A complete row with a key is that key's stored answer: 201 and the wallet as it was completed
-- (status active, never frozen: only complete wallets can be frozen). Requests that find the
-- wallet already there (200) still store their answer in idempotency_keys. NULL for rows made
-- before this migration and for reservations made without a key.
ALTER TABLE wallets ADD COLUMN api_key_id TEXT REFERENCES api_keys (id);
ALTER TABLE wallets ADD COLUMN idempotency_key TEXT;
ALTER TABLE wallets ADD COLUMN request_hash TEXT;
-- Unique per API key, like the claim table's primary key (NULLs never collide).
CREATE UNIQUE INDEX wallets_idempotency_key ON wallets (api_key_id, idempotency_key);
