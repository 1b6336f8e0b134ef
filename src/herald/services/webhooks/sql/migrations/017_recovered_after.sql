-- How many attempts a delivery had when RecoverWebhook last queued it again: its retry
-- policy starts afresh from there (a recovery after an outage gets the policy's retries,
-- not one attempt, nor as many as its past left it). Adding a column with a constant
-- default rewrites nothing.
ALTER TABLE webhooks.deliveries ADD COLUMN recovered_after integer NOT NULL DEFAULT 0;
