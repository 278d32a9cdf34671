-- Webhook retention, sqlite dialect. Kept identical to the other dialect.
--
-- The dispatcher deletes delivered deliveries and the events no delivery needs any more once
-- they are older than `[webhooks] retention_days`. Two lookups make that cheap and are
-- missing from migration 0006:
-- * deliveries by event: whether an event still has a delivery, and the foreign key check that
--   deleting an event runs against webhook_deliveries (a scan of the whole table per deleted
--   event without this index, on either database);
-- * events by age: the old ones, without reading the recent ones.
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX outbox_events_created ON outbox_events (created_at_ms);
