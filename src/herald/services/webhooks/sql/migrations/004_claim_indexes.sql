-- Claims of rate-limited webhooks: find them without scanning every pending delivery.
CREATE INDEX deliveries_pending_by_webhook
    ON webhooks.deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhooks_limited
    ON webhooks.webhooks (id) WHERE active AND (rate_per_second > 0 OR rate_per_minute > 0);
