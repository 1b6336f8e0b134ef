-- name: insert_route
INSERT INTO dispatch.routes (id, name, description, filter, target, disabled)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)
RETURNING *

-- name: upsert_route
-- Routes from configuration files: the file is the truth for the routes it names.
INSERT INTO dispatch.routes (id, name, description, filter, target, disabled)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)
ON CONFLICT (name) DO UPDATE
SET description = excluded.description, filter = excluded.filter, target = excluded.target,
    disabled = excluded.disabled, updated_at = now()
WHERE (dispatch.routes.description, dispatch.routes.filter, dispatch.routes.target,
       dispatch.routes.disabled)
      IS DISTINCT FROM (excluded.description, excluded.filter, excluded.target, excluded.disabled)
RETURNING *

-- name: get_route
SELECT * FROM dispatch.routes WHERE id = $1

-- name: get_route_for_update
SELECT * FROM dispatch.routes WHERE id = $1 FOR UPDATE

-- name: all_routes
SELECT * FROM dispatch.routes ORDER BY name

-- name: list_routes
-- The routes after the cursor ($1, $2: NULL on the first page); total counts them all.
SELECT *, (SELECT count(*) FROM dispatch.routes) AS total
FROM dispatch.routes
WHERE $1::text IS NULL OR (name, id) > ($1, $2)
ORDER BY name, id
LIMIT $3

-- name: count_routes
SELECT count(*) FROM dispatch.routes

-- name: update_route
UPDATE dispatch.routes
SET name = $2, description = $3, filter = $4::jsonb, target = $5::jsonb, disabled = $6,
    updated_at = now()
WHERE id = $1
RETURNING *

-- name: delete_route
DELETE FROM dispatch.routes WHERE id = $1 RETURNING id

-- name: notify_routes
SELECT pg_notify('herald_routes', '')

-- name: park
-- An event with failed targets. The same record parked before (consumed again after a
-- crash or a rebalance came before its offset's commit) keeps its row, which gains the
-- targets that failed this time: they may be others than the first time's.
INSERT INTO dispatch.retries AS r
    (id, topic, partition, "offset", key, value, header_names, header_values, event_id,
     event_source, event_type, targets, attempts, reason, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13,
        now() + make_interval(secs => $14))
ON CONFLICT (id) DO UPDATE
    SET targets = ARRAY(SELECT DISTINCT t FROM unnest(r.targets || EXCLUDED.targets) AS t)
    WHERE NOT (EXCLUDED.targets <@ r.targets)

-- name: claim_retries
WITH due AS (
    SELECT id FROM dispatch.retries
    WHERE next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE dispatch.retries AS r
SET next_attempt_at = now() + make_interval(secs => $2), claimed_by = $3
FROM due
WHERE r.id = due.id
RETURNING r.*

-- The settling statements below are given the targets the claim held ($n "claimed"):
-- a row that gained targets since (park) keeps those.

-- name: retry_again
-- $3: the claimed targets that failed again; $6: the claimed targets.
UPDATE dispatch.retries
SET targets = ARRAY(SELECT DISTINCT t FROM unnest(
        $3::text[] || ARRAY(SELECT unnest(targets) EXCEPT SELECT unnest($6::text[]))) AS t),
    attempts = attempts + 1, reason = $4,
    next_attempt_at = now() + make_interval(secs => $5), claimed_by = NULL
WHERE id = $1 AND claimed_by = $2

-- name: retry_done
-- Every claimed target ($3) was sent: the row goes, or keeps (due now) what it gained.
WITH kept AS (
    UPDATE dispatch.retries
    SET targets = ARRAY(SELECT unnest(targets) EXCEPT SELECT unnest($3::text[])),
        claimed_by = NULL, next_attempt_at = now()
    WHERE id = $1 AND claimed_by = $2 AND NOT (targets <@ $3::text[])
    RETURNING id
)
DELETE FROM dispatch.retries WHERE id = $1 AND claimed_by = $2 AND targets <@ $3::text[]

-- name: retry_to_dead_letter
-- $3: the targets that die; $5: the claimed targets (what the row gained since stays).
WITH gone AS (
    DELETE FROM dispatch.retries
    WHERE id = $1 AND claimed_by = $2 AND targets <@ $5::text[]
    RETURNING *
), kept AS (
    UPDATE dispatch.retries
    SET targets = ARRAY(SELECT unnest(targets) EXCEPT SELECT unnest($5::text[])),
        claimed_by = NULL, next_attempt_at = now()
    WHERE id = $1 AND claimed_by = $2 AND NOT (targets <@ $5::text[])
    RETURNING *
)
INSERT INTO dispatch.dead_letters
    (id, topic, partition, "offset", key, value, header_names, header_values, event_id,
     event_source, event_type, targets, attempts, reason)
SELECT gen_random_uuid(), topic, partition, "offset", key, value, header_names,
       header_values, event_id, event_source, event_type, $3, attempts + 1, $4
FROM (SELECT * FROM gone UNION ALL SELECT * FROM kept) AS settled
RETURNING id

-- name: dead_letter
INSERT INTO dispatch.dead_letters
    (id, topic, partition, "offset", key, value, header_names, header_values, event_id,
     event_source, event_type, targets, attempts, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: purge_dead_letters
-- Dead letters created more than $2 seconds ago, redriven or not, at most $1 of them:
-- each holds its record (up to a megabyte), and a flood of undecodable records would
-- otherwise fill the database (dead_letters_by_time finds them).
DELETE FROM dispatch.dead_letters WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM dispatch.dead_letters
    WHERE created_at < now() - make_interval(secs => $2)
    LIMIT $1))

-- name: list_dead_letters
-- Newest first, after the cursor ($4, $5: NULL on the first page); total counts every
-- dead letter the filter matches.
SELECT *,
       (SELECT count(*) FROM dispatch.dead_letters
        WHERE ($1 = '' OR event_type = $1) AND ($2 = '' OR strpos(reason, $2) > 0)
          AND ($3 OR redriven_at IS NULL)) AS total
FROM dispatch.dead_letters
WHERE ($1 = '' OR event_type = $1) AND ($2 = '' OR strpos(reason, $2) > 0)
  AND ($3 OR redriven_at IS NULL)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
ORDER BY created_at DESC, id DESC
LIMIT $6

-- name: count_dead_letters
SELECT count(*) FROM dispatch.dead_letters
WHERE ($1 = '' OR event_type = $1) AND ($2 = '' OR strpos(reason, $2) > 0)
  AND ($3 OR redriven_at IS NULL)

-- name: redrive
-- Dead letters (by id, or every one matching the filter when $1 is NULL) go back to
-- the retries, due now, owing the targets they still owed; each only once.
WITH chosen AS (
    UPDATE dispatch.dead_letters SET redriven_at = now()
    WHERE redriven_at IS NULL
      AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
      AND ($1::uuid[] IS NOT NULL
           OR (($2 = '' OR event_type = $2) AND ($3 = '' OR strpos(reason, $3) > 0)))
    RETURNING *
)
INSERT INTO dispatch.retries
    (id, topic, partition, "offset", key, value, header_names, header_values, event_id,
     event_source, event_type, targets, attempts, reason, next_attempt_at)
SELECT gen_random_uuid(), topic, partition, "offset", key, value, header_names,
       header_values, event_id, event_source, event_type, targets, 0,
       'redriven: ' || reason, now()
FROM chosen
RETURNING id
