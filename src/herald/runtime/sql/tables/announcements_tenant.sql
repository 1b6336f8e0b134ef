-- The tenant an alert concerns ('' for none): published as the event's `heraldtenant`
-- attribute, which limits its webhook deliveries to that tenant's webhooks.
ALTER TABLE {schema}.announcements ADD COLUMN tenant text NOT NULL DEFAULT '';
