-- Dead-letter records on their way to the DLQ topic ({schema} is the service's own
-- schema, whose migrations create {schema}.dlq_outbox).

-- name: add
INSERT INTO {schema}.dlq_outbox (topic, key, value, header_names, header_values)
VALUES ($1, $2, $3, $4::text[], $5::bytea[])

-- name: take
-- The oldest records, locked for this transaction (another replica skips them; a
-- crashed one's locks end with its connection).
SELECT id, topic, key, value, header_names, header_values
FROM {schema}.dlq_outbox
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: sent
DELETE FROM {schema}.dlq_outbox WHERE id = ANY($1::bigint[])
