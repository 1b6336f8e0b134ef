-- name: claim_keys
-- Inserts idempotency keys; an expired key not purged yet is taken over.
-- Returns the keys this statement now owns. Keys are inserted in one order (as are
-- events by store_events): two transactions sharing keys in different orders would each
-- wait for a key the other holds, a deadlock.
INSERT INTO ingest.idempotency_keys AS k (key, endpoint, actor, fingerprint, event_id, expires_at)
SELECT t.key, t.endpoint, t.actor, t.fingerprint, t.event_id, now() + make_interval(secs => $6)
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[])
     AS t(key, endpoint, actor, fingerprint, event_id)
ORDER BY t.key, t.endpoint, t.actor
ON CONFLICT (key, endpoint, actor) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, event_id = EXCLUDED.event_id,
        created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= now()
RETURNING k.key, k.endpoint, k.actor

-- name: find_keys
SELECT k.key, k.endpoint, k.actor, k.fingerprint, k.event_id
FROM ingest.idempotency_keys AS k
JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(key, endpoint, actor)
  ON (k.key, k.endpoint, k.actor) = (t.key, t.endpoint, t.actor)

-- name: release_keys
DELETE FROM ingest.idempotency_keys AS k
USING unnest($1::text[], $2::text[], $3::text[]) AS t(key, endpoint, actor)
WHERE (k.key, k.endpoint, k.actor) = (t.key, t.endpoint, t.actor)

-- name: store_events
-- Inserts the events that are new, their outbox rows (in the given order) and, when
-- anything was inserted, notifies the relays: one round trip for a whole group.
WITH new_events AS (
    INSERT INTO ingest.events (source, id, type, fingerprint, attributes, data)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[], $6::bytea[])
    ORDER BY 1, 2
    ON CONFLICT (source, id) DO NOTHING
    RETURNING source, id
), new_outbox AS (
    INSERT INTO ingest.outbox (lane, topic, key, value, headers, event_type)
    SELECT o.lane, o.topic, o.key, o.value, o.headers, o.event_type
    FROM unnest($1::text[], $2::text[], $7::smallint[], $8::text[], $9::bytea[], $10::bytea[],
                $11::jsonb[], $3::text[])
         WITH ORDINALITY AS o(source, id, lane, topic, key, value, headers, event_type, n)
    JOIN new_events AS e ON (e.source, e.id) = (o.source, o.id)
    ORDER BY o.n
    RETURNING 1
)
SELECT source, id, (SELECT pg_notify('herald_outbox', $12)) AS notified FROM new_events

-- name: find_events
-- event_id and fingerprint as find_keys names them: a repeat is judged the same way.
SELECT e.source, e.id, e.id AS event_id, e.fingerprint
FROM ingest.events AS e
JOIN unnest($1::text[], $2::text[]) AS t(source, id) ON (e.source, e.id) = (t.source, t.id)

-- name: event_data
-- Read only when a retry's fingerprint differs: its JSON data may be written otherwise.
SELECT data FROM ingest.events WHERE source = $1 AND id = $2

-- name: claim_lanes
-- Lanes with pending rows whose lock this transaction gets, at most $3 of them;
-- replicas start at different lanes ($2). The candidates are computed first
-- (MATERIALIZED) so that the lock is tried lazily, only until $3 are held, not on
-- every candidate.
WITH candidates AS MATERIALIZED (
    SELECT l
    FROM generate_series(0, $1::int - 1) AS l
    WHERE EXISTS (SELECT 1 FROM ingest.outbox WHERE lane = l AND published_at IS NULL)
    ORDER BY (l + $2::int) % $1::int
)
SELECT l AS lane FROM candidates WHERE pg_try_advisory_xact_lock(7243, l) LIMIT $3

-- name: pending_in_lanes
-- The oldest pending rows of each claimed lane (up to $2 per lane), oldest first, but
-- those of the topics $3 (Kafka does not know them now: their rows would fill the
-- window and hold back the lane's other rows).
-- A statement of its own, after claim_lanes: its snapshot is taken once the locks
-- are held, so rows that another relay marked just before are seen as published
-- (read in the claiming statement, they would look pending and be sent twice).
SELECT o.id, o.lane, o.topic, o.key, o.value, o.headers, o.event_type, o.accepted_at
FROM unnest($1::int[]) AS l(lane)
CROSS JOIN LATERAL (
    SELECT id, lane, topic, key, value, headers, event_type, accepted_at
    FROM ingest.outbox
    WHERE lane = l.lane AND published_at IS NULL AND topic <> ALL($3::text[])
    ORDER BY id
    LIMIT $2
) AS o
ORDER BY o.id

-- name: mark_published
UPDATE ingest.outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])

-- name: mark_refused
-- Kafka refused the row for good: it leaves the pending rows (dead-lettered).
UPDATE ingest.outbox
SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = left($2, 500)
WHERE id = $1

-- name: mark_failed
UPDATE ingest.outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])

-- name: outbox_backlog
-- Pending rows (counted up to $2: a backlog of millions is reported as at least that)
-- and the age in seconds of the oldest (0 when none): the oldest pending row of each
-- lane, read from the pending index, not a scan of every pending row.
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM ingest.outbox WHERE published_at IS NULL LIMIT $2) AS p) AS pending,
    coalesce(extract(epoch FROM clock_timestamp() - min(o.accepted_at)), 0)::float8 AS lag
FROM generate_series(0, $1::int - 1) AS l
LEFT JOIN LATERAL (
    SELECT accepted_at FROM ingest.outbox
    WHERE lane = l AND published_at IS NULL ORDER BY id LIMIT 1
) AS o ON true

-- Purges (runtime/retention.py): each deletes at most $1 rows.

-- name: purge_keys
DELETE FROM ingest.idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ingest.idempotency_keys WHERE expires_at <= now() LIMIT $1))

-- name: purge_outbox
-- Sent rows (and rows Kafka refused for good, which the DLQ topic has) older than $2 s.
DELETE FROM ingest.outbox WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ingest.outbox
    WHERE published_at < now() - make_interval(secs => $2) LIMIT $1))

-- name: purge_events
DELETE FROM ingest.events WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ingest.events
    WHERE accepted_at < now() - make_interval(secs => $2) LIMIT $1))

-- name: insert_builtin_type
INSERT INTO ingest.event_types
    (name, data_version, description, json_schema, id_must_be_uuid, source_pattern,
     required_attributes, builtin)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, true)
ON CONFLICT (name, data_version) DO NOTHING

-- name: insert_type
INSERT INTO ingest.event_types
    (name, data_version, description, json_schema, id_must_be_uuid, source_pattern,
     required_attributes)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)
ON CONFLICT (name, data_version) DO NOTHING
RETURNING created_at, json_schema

-- name: lock_catalog
-- Serialises the creations of event types (counted against MAX_EVENT_TYPES).
SELECT pg_advisory_xact_lock(hashtextextended('herald.ingest.event_types', 0))

-- name: count_created_types
-- The type versions registered with CreateEventType (the built-ins are not counted).
SELECT count(*) FROM ingest.event_types WHERE NOT builtin

-- name: type_exists
SELECT EXISTS (SELECT 1 FROM ingest.event_types WHERE name = $1 AND data_version = $2)

-- name: all_types
SELECT name, data_version, description, json_schema::text AS json_schema, id_must_be_uuid,
       source_pattern, required_attributes, created_at
FROM ingest.event_types

-- name: types_named
SELECT name, data_version, description, json_schema::text AS json_schema, id_must_be_uuid,
       source_pattern, required_attributes, created_at
FROM ingest.event_types WHERE name = $1

-- name: list_types
-- The types after the cursor ($2, $3: NULL on the first page); total counts every type
-- the prefix matches.
SELECT name, data_version, description, json_schema::text AS json_schema, id_must_be_uuid,
       source_pattern, required_attributes, created_at,
       (SELECT count(*) FROM ingest.event_types WHERE starts_with(name, $1)) AS total
FROM ingest.event_types
WHERE starts_with(name, $1) AND ($2::text IS NULL OR (name, data_version) > ($2, $3))
ORDER BY name, data_version
LIMIT $4

-- name: count_types
SELECT count(*) FROM ingest.event_types WHERE starts_with(name, $1)

-- name: notify_catalog
SELECT pg_notify('herald_catalog', $1)
