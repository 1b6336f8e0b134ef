-- A refused output (set aside) whose entity's later version went to Vibeapp: superseded,
-- never tried again (Vibeapp has newer content under its key; a retry that got through,
-- the limit raised meanwhile, would put the older one last). Superseded rows leave the
-- partial indexes of what is pending and what was refused.
ALTER TABLE reconcile.outbox ADD COLUMN superseded_at timestamptz;
DROP INDEX reconcile.outbox_pending;
CREATE INDEX outbox_pending ON reconcile.outbox (id)
    WHERE sent_at IS NULL AND superseded_at IS NULL;
DROP INDEX reconcile.outbox_refused;
CREATE INDEX outbox_refused ON reconcile.outbox (kind, entity_id)
    WHERE sent_at IS NULL AND refused_at IS NOT NULL AND superseded_at IS NULL;
