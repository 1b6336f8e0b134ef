-- A version of "which active webhooks want which types", bumped in the same transaction
-- as the change (a sequence would not do: nextval is visible before the commit), so a
-- reader that sees a version also sees the webhooks as of that version.
CREATE TABLE webhooks.subscription_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint  NOT NULL
);
INSERT INTO webhooks.subscription_version VALUES (true, 1);

CREATE FUNCTION webhooks.bump_subscription_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE webhooks.subscription_version SET version = version + 1;
    RETURN NULL;
END $$;

-- Not on last_delivery_at and the other columns deliveries touch.
CREATE TRIGGER webhooks_subscriptions_changed
AFTER INSERT OR DELETE OR UPDATE OF event_types, active ON webhooks.webhooks
FOR EACH STATEMENT EXECUTE FUNCTION webhooks.bump_subscription_version();
