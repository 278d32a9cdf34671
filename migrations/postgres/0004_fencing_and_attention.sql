-- Issue 12, postgres dialect. Kept column-for-column identical to the other dialect.
--
-- NEEDS_ATTENTION: a payment whose sequence number was used while none of its own transactions
-- can be shown applied (another signer of the account took it and the history that would tell
-- is pruned, or the account's history never shows it). It is parked for an operator (the admin
-- resolve route) instead of being confirmed forever, and no longer blocks its wallet: its
-- sequence is spent, so none of its transactions can apply any more.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('CREATED', 'SIGNED', 'SUBMITTED', 'SUCCESS', 'FAILED', 'NEEDS_ATTENTION'));

-- Leases with a fencing token. `epoch` grows by one every time the lease changes hands (rows are
-- never deleted, a release only expires them), and every payment transition names the owner and
-- epoch it holds: a worker whose lease expired and was taken over cannot write anything.
-- `expires_at_ms` is in the database's clock (milliseconds since the Unix epoch), never a
-- replica's, so replicas with skewed clocks agree on who holds a wallet.
DROP TABLE payment_leases;
CREATE TABLE payment_leases (
    wallet_id      TEXT PRIMARY KEY REFERENCES wallets (id),
    owner          TEXT NOT NULL,
    epoch          BIGINT NOT NULL CHECK (epoch > 0),
    expires_at_ms  BIGINT NOT NULL
);
