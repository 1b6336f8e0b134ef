-- Retention (DELIVERY_RETENTION_DAYS): finished deliveries are purged by creation time.
-- A BRIN index: deliveries are inserted in time order, so block ranges summarise
-- created_at well, and the index costs next to nothing per insert (a b-tree would add
-- a write to every delivery for a query that runs every ten minutes).
CREATE INDEX deliveries_created_brin ON webhooks.deliveries USING brin (created_at);
