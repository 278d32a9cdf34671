-- When the worker looks at a payment next, in the database's clock (milliseconds since the Unix
-- epoch), as leases are. It was a replica's timestamp (`next_attempt_at`), compared with other
-- replicas' clocks: a payment accepted or postponed by a replica whose clock ran days ahead was
-- not due anywhere else for days. Every replica now writes `due_at_ms` as "database now + wait"
-- and asks "due_at_ms <= database now". Existing rows become due at once (0).
--
-- `accepted_at_ms`: when the payment was accepted, by the same clock. The worker proves an
-- account absent only from reads covering a ledger that closed after the payment was accepted;
-- judged by `created_at` (the accepting replica's clock) a replica days ahead made that wait for
-- days, and one behind let a read from before the acceptance count. Existing rows take their
-- `created_at`.
DROP INDEX payments_pending;
ALTER TABLE payments ADD COLUMN due_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments DROP COLUMN next_attempt_at;
CREATE INDEX payments_pending ON payments (status, due_at_ms);
ALTER TABLE payments ADD COLUMN accepted_at_ms BIGINT NOT NULL DEFAULT 0;
UPDATE payments SET accepted_at_ms = CAST(EXTRACT(EPOCH FROM CAST(created_at AS TIMESTAMPTZ)) * 1000 AS BIGINT);
