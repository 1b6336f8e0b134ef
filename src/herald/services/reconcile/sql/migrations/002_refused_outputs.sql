-- Outputs Vibeapp's Kafka refuses for good (larger than the topic takes): set aside for
-- a while instead of blocking every later output; what depends on them waits.
ALTER TABLE reconcile.outbox ADD COLUMN refused_at timestamptz, ADD COLUMN last_error text;
CREATE INDEX outbox_refused ON reconcile.outbox (kind, entity_id)
    WHERE sent_at IS NULL AND refused_at IS NOT NULL;
