-- A refused output (set aside) whose entity's later version went to Vibeapp: superseded,
-- never tried again (Vibeapp has newer content under its key; a retry that got through,
-- the limit raised meanwhile, would put the older one last). Superseded rows leave the
-- partial indexes of what is pending and what was refused.
ALTER TABLE reconcile.outbox ADD COLUMN superseded_at timestamptz;
-- Refused before this migration, with a later version of the entity already sent.
UPDATE reconcile.outbox AS f SET superseded_at = now()
WHERE f.sent_at IS NULL AND f.refused_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM reconcile.outbox AS l
              WHERE l.kind = f.kind AND l.entity_id = f.entity_id AND l.id > f.id
                AND l.sent_at IS NOT NULL);
DROP INDEX reconcile.outbox_pending;
CREATE INDEX outbox_pending ON reconcile.outbox (id)
    WHERE sent_at IS NULL AND superseded_at IS NULL;
DROP INDEX reconcile.outbox_refused;
CREATE INDEX outbox_refused ON reconcile.outbox (kind, entity_id)
    WHERE sent_at IS NULL AND refused_at IS NOT NULL AND superseded_at IS NULL;
