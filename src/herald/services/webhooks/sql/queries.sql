-- name: insert_webhook
INSERT INTO webhooks.webhooks
    (id, tenant, name, url, event_types, active, max_retries, initial_delay_ms,
     backoff_multiplier, max_delay_ms, rate_per_second, rate_per_minute, headers,
     description, metadata, secret)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, $15::jsonb, $16)
RETURNING *

-- name: get_webhook
SELECT * FROM webhooks.webhooks WHERE id = $1 AND tenant = $2

-- name: get_webhook_for_update
SELECT * FROM webhooks.webhooks WHERE id = $1 AND tenant = $2 FOR UPDATE

-- name: list_webhooks
SELECT *, count(*) OVER () AS total
FROM webhooks.webhooks WHERE tenant = $1
ORDER BY created_at, id
OFFSET $2 LIMIT $3

-- name: count_webhooks
SELECT count(*) FROM webhooks.webhooks WHERE tenant = $1

-- name: update_webhook
UPDATE webhooks.webhooks
SET name = $3, url = $4, event_types = $5, active = $6, max_retries = $7,
    initial_delay_ms = $8, backoff_multiplier = $9, max_delay_ms = $10,
    rate_per_second = $11, rate_per_minute = $12, headers = $13::jsonb, description = $14,
    metadata = $15::jsonb, updated_at = now()
WHERE id = $1 AND tenant = $2
RETURNING *

-- name: delete_webhook
DELETE FROM webhooks.webhooks WHERE id = $1 AND tenant = $2 RETURNING id

-- name: rotate_secret
UPDATE webhooks.webhooks
SET previous_secret = secret, secret = $3,
    previous_secret_expires_at = now() + make_interval(secs => $4), updated_at = now()
WHERE id = $1 AND tenant = $2
RETURNING previous_secret_expires_at
