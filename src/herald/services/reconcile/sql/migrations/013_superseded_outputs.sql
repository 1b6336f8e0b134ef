-- A refused output (set aside) whose entity has a later output queued: superseded,
-- never tried again. The later one goes instead (Vibeapp is to hold the latest content;
-- a retry that got through, the limit raised meanwhile, would put the older one last).
ALTER TABLE reconcile.outbox ADD COLUMN superseded_at timestamptz;
