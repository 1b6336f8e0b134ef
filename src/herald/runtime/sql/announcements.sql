-- Operational events on their way to ingest ({schema} is the service's own schema,
-- whose migrations create {schema}.announcements).

-- name: add
INSERT INTO {schema}.announcements (event_type, key, subject, data, dataschema, tenant,
                                     traceparent)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)
ON CONFLICT (event_type, key) DO NOTHING

-- name: pending
SELECT event_type, key, subject, data::text AS data, dataschema, created_at, tenant,
       traceparent
FROM {schema}.announcements
WHERE refused_at IS NULL
ORDER BY created_at
LIMIT $1

-- name: published
DELETE FROM {schema}.announcements WHERE event_type = $1 AND key = $2

-- name: refused
UPDATE {schema}.announcements SET refused_at = now(), last_error = left($3, 1000)
WHERE event_type = $1 AND key = $2
