-- Claims of rate-limited webhooks: counted over the last second and minute, under a
-- lock on the webhook's row, so the limit holds across every worker.
CREATE TABLE webhooks.sends (
    webhook_id uuid        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX sends_by_webhook ON webhooks.sends (webhook_id, at);
