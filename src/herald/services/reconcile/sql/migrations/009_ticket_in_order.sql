-- false: a newer version of its order no longer lists the ticket (taken out of the sale,
-- and cancelled); reports count only the tickets an order lists.
ALTER TABLE reconcile.tickets ADD COLUMN in_order boolean NOT NULL DEFAULT true;
