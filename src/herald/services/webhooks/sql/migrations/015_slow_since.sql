-- Since when a delivery worker has found the webhook's endpoint slow (an attempt of a
-- second or more, a timeout, no connection); NULL once one answered quickly (or none
-- was slow yet). Kept here, not only in the worker's memory, so that a restarted worker
-- and every other replica hold a slow endpoint to its share from their first claim.
ALTER TABLE webhooks.webhooks ADD COLUMN slow_since timestamptz;
