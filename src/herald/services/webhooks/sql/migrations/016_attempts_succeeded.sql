-- failing_since asks, after every failed attempt, when the webhook last answered 2xx:
-- read from attempts_by_webhook, that walked back over every failure since (millions,
-- for a busy webhook failing for days), one walk per failure. This index answers it
-- with one probe.
CREATE INDEX attempts_succeeded ON webhooks.attempts (webhook_id, started_at)
    WHERE status_code BETWEEN 200 AND 299;
