-- name: insert_webhook
-- Its times are the clock's, taken under the tenant's lock (lock_tenant), not now() (the
-- transaction's start): a creation that began first but waited for the lock committed
-- with an older created_at than one already listed, and a listing paging oldest-first
-- past the newer one never showed it. One reading for all four (the secret is as old
-- as the webhook).
INSERT INTO webhooks.webhooks
    (id, tenant, name, url, event_types, active, max_retries, initial_delay_ms,
     backoff_multiplier, max_delay_ms, rate_per_second, rate_per_minute, headers,
     description, metadata, retry_delays_ms, retry_statuses, secret, created_at, updated_at,
     activated_at, secret_created_at)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, $15::jsonb, $16,
       $17, $18, t.now, t.now, t.now, t.now
FROM (SELECT clock_timestamp() AS now) AS t
RETURNING *

-- name: lock_tenant
-- Serialises the creations of one tenant's webhooks (counted against its limit).
SELECT pg_advisory_xact_lock(hashtextextended('herald.webhooks.tenant:' || $1, 0))

-- name: get_webhook
SELECT * FROM webhooks.webhooks WHERE id = $1 AND tenant = $2

-- name: get_webhook_for_update
SELECT * FROM webhooks.webhooks WHERE id = $1 AND tenant = $2 FOR UPDATE

-- name: list_webhooks
-- Oldest first, after the cursor ($2, $3: NULL on the first page); total counts all the
-- tenant's webhooks.
SELECT *, (SELECT count(*) FROM webhooks.webhooks WHERE tenant = $1) AS total
FROM webhooks.webhooks
WHERE tenant = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
ORDER BY created_at, id
LIMIT $4

-- name: count_webhooks
SELECT count(*) FROM webhooks.webhooks WHERE tenant = $1

-- name: update_webhook
UPDATE webhooks.webhooks
SET name = $3, url = $4, event_types = $5, active = $6, max_retries = $7,
    initial_delay_ms = $8, backoff_multiplier = $9, max_delay_ms = $10,
    rate_per_second = $11, rate_per_minute = $12, headers = $13::jsonb, description = $14,
    metadata = $15::jsonb, retry_delays_ms = $16, retry_statuses = $17, updated_at = now(),
    -- active on the right is the value before this update: re-enabled now.
    activated_at = CASE WHEN $6 AND NOT active THEN now() ELSE activated_at END,
    -- Found slow at another URL, or before it was disabled: untried again (a worker
    -- that found it slow itself sees the new url or activated_at on its next claim).
    slow_since = CASE WHEN url = $4 AND NOT ($6 AND NOT active) THEN slow_since END
WHERE id = $1 AND tenant = $2
RETURNING *

-- name: delete_webhook
DELETE FROM webhooks.webhooks WHERE id = $1 AND tenant = $2 RETURNING id

-- name: rotate_secret
UPDATE webhooks.webhooks
SET previous_secret = secret, secret = $3,
    previous_secret_expires_at = now() + make_interval(secs => $4), updated_at = now(),
    secret_created_at = now(), secret_due_announced = false
WHERE id = $1 AND tenant = $2
RETURNING previous_secret_expires_at

-- name: secrets_due
-- Active webhooks whose secret is older than $1 seconds and not announced yet (at most
-- $2), marked announced: the caller stores their alerts in this transaction.
UPDATE webhooks.webhooks AS w SET secret_due_announced = true
FROM (SELECT id FROM webhooks.webhooks
      WHERE active AND NOT secret_due_announced
        AND secret_created_at < now() - make_interval(secs => $1)
      ORDER BY secret_created_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS due
WHERE w.id = due.id
RETURNING w.id, w.tenant, w.name, w.secret_created_at

-- name: insert_deliveries
-- New deliveries from consumed jobs; a job seen before (same webhook, job id) is
-- skipped. Jobs for webhooks that no longer exist are dropped by the join. With a
-- worker ($8), up to $10 of them (of active webhooks without rate limits) are inserted
-- already claimed by it for $9 seconds and come back ready to attempt, like claim_due's
-- rows: a fresh delivery then costs no claim. The rest are due now for any worker.
WITH t AS (
    SELECT t.*, w.tenant,
           w.active AND w.rate_per_second = 0 AND w.rate_per_minute = 0
               AND row_number() OVER () <= $10 AS claim
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                $7::jsonb[]) AS t(id, webhook_id, job_id, event_id, event_type, body, context)
    JOIN webhooks.webhooks AS w ON w.id = t.webhook_id
), ins AS (
    INSERT INTO webhooks.deliveries
        (id, webhook_id, tenant, job_id, event_id, event_type, body, context,
         next_attempt_at, claimed_by)
    SELECT id, webhook_id, tenant, job_id, event_id, event_type, body, context,
           CASE WHEN claim THEN now() + make_interval(secs => $9) ELSE now() END,
           CASE WHEN claim THEN $8 END
    FROM t
    ON CONFLICT (webhook_id, job_id) DO NOTHING
    RETURNING *
)
SELECT ins.id, ins.webhook_id, ins.tenant, ins.job_id, ins.event_id, ins.event_type, ins.body,
       ins.context::text AS context, ins.attempts, ins.recovered_after, ins.retry_reason,
       ins.retry_after,
       ins.claimed_by IS NOT NULL AS claimed,
       w.url, w.max_retries, w.initial_delay_ms, w.backoff_multiplier, w.max_delay_ms,
       w.retry_delays_ms, w.retry_statuses,
       w.headers::text AS headers, w.secret, w.previous_secret,
       w.previous_secret_expires_at > now() AS previous_valid,
       w.slow_since IS NOT NULL AS slow, w.activated_at
FROM ins JOIN webhooks.webhooks AS w ON w.id = ins.webhook_id

-- name: claim_due
-- Due deliveries of active webhooks; claiming moves next_attempt_at a lease ahead
-- ($2 seconds), so no other worker attempts them meanwhile and a crashed worker's
-- claims come due again once the lease runs out. Each row comes with what the attempt
-- needs of its webhook (as claim_limited's do).
-- The oldest $1 overall are among each webhook's oldest $1: those are read in index
-- order (deliveries_pending_by_webhook), so a backlog of 20,000 due deliveries costs a
-- claim 16 rows, not a sort of all 20,000 (7 ms a claim, most of PostgreSQL's time in
-- a burst). Webhooks that are inactive or rate-limited (claim_limited) are not read,
-- nor those this worker holds back ($4: slow ones with their share of its attempts in
-- flight, and the slow ones of a tenant whose slow webhooks have their share together),
-- nor those of the tenants in $5 but for their fast ones in $6 (their share and their
-- probes are full: see shares.py), so one slow endpoint's backlog, or one tenant's,
-- cannot take every slot from the others.
-- Tenants take turns: each tenant's oldest first, then each one's second oldest, ...
-- (in random order within a turn), so a tenant with a backlog of thousands (test events
-- cost it nothing) does not make another tenant's deliveries wait until it is worked
-- off; within one tenant the oldest go first.
WITH due AS (
    SELECT c.id
    FROM (
        SELECT d.id,
               row_number() OVER (PARTITION BY w.tenant ORDER BY d.next_attempt_at) AS turn
        FROM webhooks.webhooks AS w
        CROSS JOIN LATERAL (
            SELECT x.id, x.next_attempt_at
            FROM webhooks.deliveries AS x
            WHERE x.webhook_id = w.id AND x.status = 'pending' AND x.next_attempt_at <= now()
            ORDER BY x.next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ) AS d
        WHERE w.active AND w.rate_per_second = 0 AND w.rate_per_minute = 0
          AND w.id <> ALL($4::uuid[])
          AND (w.tenant <> ALL($5::text[]) OR w.id = ANY($6::uuid[]))
    ) AS c
    ORDER BY c.turn, random()
    LIMIT $1
)
UPDATE webhooks.deliveries AS d
SET next_attempt_at = now() + make_interval(secs => $2), claimed_by = $3, updated_at = now()
FROM due, webhooks.webhooks AS w
WHERE d.id = due.id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.tenant, d.job_id, d.event_id, d.event_type, d.body,
          d.context::text AS context, d.attempts, d.recovered_after, d.retry_reason,
          d.retry_after,
          w.url, w.max_retries, w.initial_delay_ms, w.backoff_multiplier, w.max_delay_ms,
          w.retry_delays_ms, w.retry_statuses,
          w.headers::text AS headers, w.secret, w.previous_secret,
          w.previous_secret_expires_at > now() AS previous_valid,
          w.slow_since IS NOT NULL AS slow, w.activated_at

-- name: record_outcomes
-- Attempt outcomes, many at once: the attempt rows, each delivery's new state if this
-- worker ($1) still holds its claim (RETURNING those), and the webhooks' last delivery
-- time.
-- An outcome whose delivery is gone (its webhook was deleted while the attempt was in
-- flight) is dropped. An attempt of a worker that no longer holds the claim (its lease
-- ran out and another worker claimed the delivery) is logged only if its number is
-- free: the holder's attempt of the same number, whose outcome is the one that counts,
-- replaces it in the log when it comes. The deliveries are locked (FOR KEY SHARE), not merely looked up:
-- one deleted by a transaction committing meanwhile is skipped by the lock, where a
-- lookup would let its attempt row fail the foreign key check. The lock is taken in r,
-- which the UPDATE reads: a row updated by this statement before a later lock on it
-- would count as gone.
-- last_delivery_at: webhook rows another transaction holds are skipped rather than
-- waited for (it is setting the same "now", or changing the webhook): no waiting
-- behind a busy webhook, and no lock-order deadlocks (rows locked in id order). The
-- lock is NO KEY UPDATE, which new deliveries' foreign key checks (KEY SHARE) pass.
-- A webhook's time is moved at most once a second: at thousands of deliveries a
-- second, a new row version of a few busy webhooks per group made every statement
-- that reads them (claims, inserts) wade through dead versions.
WITH r AS (
    SELECT t.*, live.claimed_by IS NOT DISTINCT FROM $1 AS holds
    FROM unnest($2::uuid[], $3::int[], $4::uuid[], $5::timestamptz[], $6::int[], $7::text[],
                $8::int[], $9::text[], $10::timestamptz[], $11::text[], $12::float8[],
                $13::text[], $14::text[])
         AS t(delivery_id, number, webhook_id, started_at, status_code, error, response_ms,
              status, next_at, retry_reason, retry_after, last_error, last_response)
    JOIN webhooks.deliveries AS live ON live.id = t.delivery_id
    FOR KEY SHARE OF live
), held AS (
    INSERT INTO webhooks.attempts AS a
        (delivery_id, number, webhook_id, started_at, status_code, error, response_ms)
    SELECT DISTINCT ON (delivery_id, number)  -- DO UPDATE takes a key once a statement
           delivery_id, number, webhook_id, started_at, status_code, error, response_ms
    FROM r WHERE holds
    ON CONFLICT (delivery_id, number) DO UPDATE
    SET webhook_id = excluded.webhook_id, started_at = excluded.started_at,
        status_code = excluded.status_code, error = excluded.error,
        response_ms = excluded.response_ms
), stale AS (
    INSERT INTO webhooks.attempts
        (delivery_id, number, webhook_id, started_at, status_code, error, response_ms)
    SELECT delivery_id, number, webhook_id, started_at, status_code, error, response_ms
    FROM r WHERE NOT holds
    ON CONFLICT (delivery_id, number) DO NOTHING
), touched AS (
    UPDATE webhooks.webhooks AS w SET last_delivery_at = now()
    FROM (SELECT id FROM webhooks.webhooks
          WHERE id = ANY($4::uuid[])
            AND (last_delivery_at IS NULL OR last_delivery_at < now() - interval '1 second')
          ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) AS t
    WHERE w.id = t.id
)
UPDATE webhooks.deliveries AS d
SET status = r.status, attempts = r.number, next_attempt_at = r.next_at,
    retry_reason = r.retry_reason, retry_after = r.retry_after,
    last_status_code = r.status_code, last_error = r.last_error,
    last_response = r.last_response, last_response_ms = r.response_ms,
    delivered_at = CASE WHEN r.status = 'delivered' THEN now() END, claimed_by = NULL,
    updated_at = now()
FROM r
WHERE d.id = r.delivery_id AND d.claimed_by = $1
RETURNING d.id

-- name: set_slow
-- A worker's verdict on the webhook's endpoint changed ($2: slow, or quick again):
-- stored for a restarted worker and the other replicas. A row already saying so is not
-- written again, and a slow one keeps the time it was first found slow. Only while the
-- webhook still has the endpoint the verdict was reached at ($3 url, $4 activated_at):
-- an attempt at its old URL that ended after an UpdateWebhook says nothing of the new.
UPDATE webhooks.webhooks
SET slow_since = CASE WHEN $2 THEN coalesce(slow_since, now()) END
WHERE id = $1 AND (slow_since IS NOT NULL) <> $2 AND url = $3 AND activated_at = $4

-- name: slow_webhooks
-- The active webhooks found slow (at most $1), which a starting worker holds to their
-- share before it has tried them itself; with their endpoint (url, activated_at).
SELECT id, tenant, url, activated_at FROM webhooks.webhooks
WHERE slow_since IS NOT NULL AND active
LIMIT $1

-- name: release_some
-- Deliveries claimed by this worker ($1) that it will not attempt now (their webhook
-- has its share of attempts in flight): due now, for any worker.
UPDATE webhooks.deliveries SET claimed_by = NULL, next_attempt_at = now(), updated_at = now()
WHERE id = ANY($2::uuid[]) AND claimed_by = $1

-- name: release_claims
-- A stopping worker ($1) hands back what it claimed and did not finish (offered to it
-- but not started, attempts cut short): due now, for any worker, instead of when the
-- lease runs out.
UPDATE webhooks.deliveries SET claimed_by = NULL, next_attempt_at = now(), updated_at = now()
WHERE claimed_by = $1 AND status = 'pending'

-- name: disable_webhook
UPDATE webhooks.webhooks SET active = false, updated_at = now() WHERE id = $1 AND active
RETURNING tenant

-- name: next_due
SELECT min(next_attempt_at) FROM webhooks.deliveries WHERE status = 'pending'

-- name: due_depth
-- What claims can take: pending deliveries of disabled webhooks wait for it to be active,
-- and counted here they kept the lag growing while nothing was behind.
SELECT count(*) AS depth, coalesce(extract(epoch FROM now() - min(d.next_attempt_at)), 0) AS lag
FROM webhooks.deliveries AS d JOIN webhooks.webhooks AS w ON w.id = d.webhook_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.active

-- name: list_deliveries
-- Newest first, after the cursor ($4, $5: NULL on the first page); total counts every
-- delivery the filter matches.
SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.last_response_ms,
       d.delivered_at, d.last_status_code, d.last_response, d.last_error, d.created_at,
       d.next_attempt_at, d.claimed_by IS NOT NULL AS claimed,
       (SELECT count(*) FROM webhooks.deliveries
        WHERE webhook_id = $1 AND tenant = $2 AND ($3 = '' OR status = $3)) AS total
FROM webhooks.deliveries AS d
WHERE d.webhook_id = $1 AND d.tenant = $2 AND ($3 = '' OR d.status = $3)
  AND ($4::timestamptz IS NULL OR (d.created_at, d.id) < ($4, $5))
ORDER BY d.created_at DESC, d.id DESC
LIMIT $6

-- name: count_deliveries
SELECT count(*) FROM webhooks.deliveries
WHERE webhook_id = $1 AND tenant = $2 AND ($3 = '' OR status = $3)

-- name: delivery_stats
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'delivered') AS successful,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM webhooks.deliveries
WHERE webhook_id = $1 AND tenant = $2 AND created_at >= $3 AND created_at < $4

-- name: delivery_stats_by_type
SELECT event_type, count(*) AS n
FROM webhooks.deliveries
WHERE webhook_id = $1 AND tenant = $2 AND created_at >= $3 AND created_at < $4
GROUP BY event_type

-- name: response_times
SELECT coalesce(avg(response_ms), 0) AS average,
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY response_ms), 0) AS p50,
       coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY response_ms), 0) AS p95,
       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY response_ms), 0) AS p99
FROM webhooks.attempts
WHERE webhook_id = $1 AND started_at >= $2 AND started_at < $3 AND status_code IS NOT NULL

-- name: resend_delivery
-- Once more, now; not while a worker holds it (then it is being attempted anyway). A
-- delivered one is pending again: not delivered until this attempt succeeds.
UPDATE webhooks.deliveries
SET status = 'pending', next_attempt_at = now(), claimed_by = NULL, retry_reason = 'resend',
    retry_after = 0, delivered_at = NULL, updated_at = now()
WHERE id = $1 AND tenant = $2 AND status <> 'pending'
RETURNING id

-- name: pending_test_events
-- How many of the webhook's test events wait to be delivered, counted up to $2.
SELECT count(*) FROM (
    SELECT 1 FROM webhooks.deliveries
    WHERE webhook_id = $1 AND status = 'pending' AND job_id LIKE 'test/%'
    LIMIT $2
) AS waiting

-- name: get_delivery
SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.last_response_ms,
       d.delivered_at, d.last_status_code, d.last_response, d.last_error, d.created_at,
       d.next_attempt_at, d.claimed_by IS NOT NULL AS claimed
FROM webhooks.deliveries AS d WHERE d.id = $1 AND d.tenant = $2

-- name: recover_webhook
-- Its retry policy starts afresh (recovered_after: the attempts made so far); a delivery
-- resent (ResendDelivery: one attempt) and not attempted yet is taken too.
UPDATE webhooks.deliveries
SET status = 'pending', next_attempt_at = now(), claimed_by = NULL, retry_reason = 'recover',
    retry_after = 0, recovered_after = attempts, updated_at = now()
WHERE webhook_id = $1 AND tenant = $2 AND created_at >= $3
  AND (status = 'failed'
       OR (status = 'pending' AND retry_reason = 'resend' AND claimed_by IS NULL))

-- name: limited_with_due
-- Rate-limited webhooks with deliveries due, the one whose oldest has waited longest
-- first (both looked up by partial indexes, so this is cheap when no webhook has a
-- limit). A webhook just served has its claimed deliveries' due times moved on, so
-- beyond 100 such webhooks each gets its turn.
SELECT w.id AS webhook_id, w.tenant
FROM webhooks.webhooks AS w
CROSS JOIN LATERAL (
    SELECT d.next_attempt_at
    FROM webhooks.deliveries AS d
    WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT 1
) AS oldest
WHERE w.active AND (w.rate_per_second > 0 OR w.rate_per_minute > 0)
ORDER BY oldest.next_attempt_at
LIMIT 100

-- name: lock_limited
-- The webhook's row lock serialises the claims of every worker for it.
SELECT rate_per_second, rate_per_minute
FROM webhooks.webhooks WHERE id = $1 AND active
FOR UPDATE

-- name: recent_sends
-- A statement of its own, after lock_limited: its snapshot is taken once the lock is
-- held, so the sends another worker committed while we waited are counted.
SELECT count(*) FILTER (WHERE at > clock_timestamp() - interval '1 second') AS second,
       count(*) AS minute
FROM webhooks.sends
WHERE webhook_id = $1 AND at > clock_timestamp() - interval '1 minute'

-- name: claim_limited
WITH due AS (
    SELECT id FROM webhooks.deliveries
    WHERE webhook_id = $1 AND status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE webhooks.deliveries AS d
SET next_attempt_at = now() + make_interval(secs => $3), claimed_by = $4, updated_at = now()
FROM due, webhooks.webhooks AS w
WHERE d.id = due.id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.tenant, d.job_id, d.event_id, d.event_type, d.body,
          d.context::text AS context, d.attempts, d.recovered_after, d.retry_reason,
          d.retry_after,
          w.url, w.max_retries, w.initial_delay_ms, w.backoff_multiplier, w.max_delay_ms,
          w.retry_delays_ms, w.retry_statuses,
          w.headers::text AS headers, w.secret, w.previous_secret,
          w.previous_secret_expires_at > now() AS previous_valid,
          w.slow_since IS NOT NULL AS slow, w.activated_at

-- name: record_sends
INSERT INTO webhooks.sends (webhook_id) SELECT $1 FROM generate_series(1, $2::int)

-- name: purge_sends
DELETE FROM webhooks.sends WHERE at < now() - interval '2 minutes'

-- name: failing_since
-- When the run of failures without any 2xx began (NULL when the last attempt succeeded
-- or there were none). A run starts afresh when the webhook is (re-)activated: an
-- operator re-enabling a disabled webhook gives it a new period to recover in.
SELECT min(a.started_at)
FROM webhooks.attempts AS a
WHERE a.webhook_id = $1
  AND a.started_at > greatest(
      (SELECT activated_at FROM webhooks.webhooks WHERE id = $1),
      (SELECT max(s.started_at) FROM webhooks.attempts AS s
       WHERE s.webhook_id = $1 AND s.status_code BETWEEN 200 AND 299))

-- name: subscription_version
SELECT version FROM webhooks.subscription_version

-- name: subscriptions
-- One statement, so the version and the rows come from the same snapshot.
SELECT v.version, w.id, w.event_types, w.tenant
FROM webhooks.subscription_version AS v
LEFT JOIN webhooks.webhooks AS w ON w.active
ORDER BY w.id

-- name: purge_deliveries
-- Finished deliveries created more than $2 seconds ago, at most $1 of them (their
-- attempts go with them: ON DELETE CASCADE). A delivery still pending is kept.
DELETE FROM webhooks.deliveries WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM webhooks.deliveries
    WHERE created_at < now() - make_interval(secs => $2) AND status <> 'pending'
    LIMIT $1))

-- name: tenants
-- The tenants that have webhooks, at most $1 of them (a start compares them with the
-- tenants WEBHOOKS_API_KEYS names).
SELECT DISTINCT tenant FROM webhooks.webhooks ORDER BY tenant LIMIT $1
