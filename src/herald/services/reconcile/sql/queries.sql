-- name: lock_keys
-- Serialises everything about one event across replicas; keys sorted, so no deadlock.
SELECT count(pg_advisory_xact_lock(h))
FROM (SELECT DISTINCT hashtextextended(k, 7) AS h FROM unnest($1::text[]) AS k ORDER BY 1) s

-- name: take_inputs
-- The records not taken before (a replay of the same coordinates is skipped, also once
-- retention purged their rows: at or below their partition's input_horizon).
INSERT INTO reconcile.inputs (topic, partition, "offset", kind, entity_id, status)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[])
    AS x(topic, partition, "offset", kind, entity_id, status)
WHERE NOT EXISTS (SELECT 1 FROM reconcile.input_horizon h
                  WHERE h.topic = x.topic AND h.partition = x.partition
                    AND x."offset" <= h."offset")
ON CONFLICT DO NOTHING
RETURNING topic, partition, "offset"

-- name: set_order_delivery
UPDATE reconcile.orders
SET delivery = $2,
    parked_at = CASE WHEN $2 = 'parked' THEN coalesce(parked_at, now()) END,
    sent_at = CASE WHEN $2 = 'sent' THEN now() END
WHERE id = $1

-- name: upsert_tickets
-- A refunded ticket stays refunded whatever the order stream says later.
INSERT INTO reconcile.tickets (id, order_id, event_id, barcode, price_nominal, currency, status)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::text[], $7::text[])
ON CONFLICT (id) DO UPDATE
SET order_id = excluded.order_id, event_id = excluded.event_id, barcode = excluded.barcode,
    price_nominal = excluded.price_nominal, currency = excluded.currency,
    status = CASE WHEN tickets.status = 'refunded' THEN 'refunded' ELSE excluded.status END,
    in_order = true, updated_at = now()
WHERE (tickets.order_id, tickets.event_id, tickets.barcode, tickets.price_nominal,
       tickets.currency, tickets.status, tickets.in_order)
      IS DISTINCT FROM (excluded.order_id, excluded.event_id, excluded.barcode,
                        excluded.price_nominal, excluded.currency, excluded.status, true)

-- name: cancel_removed_tickets
-- Tickets a newer version of their order ($1) no longer lists ($2: the tickets it lists)
-- were taken out of the sale: cancelled, and no longer counted as the order's (a
-- refunded one stays refunded and counted).
UPDATE reconcile.tickets AS t SET status = 'cancelled', in_order = false, updated_at = now()
WHERE t.order_id = ANY($1::text[]) AND t.in_order AND t.status <> 'refunded'
  AND NOT t.id = ANY($2::text[])

-- name: get_order
SELECT * FROM reconcile.orders WHERE id = $1

-- name: order_tickets
SELECT * FROM reconcile.tickets WHERE order_id = $1 ORDER BY id

-- name: tickets_by_id
-- One index probe per id, whatever the planner knows of the table (LIMIT 1 keeps it
-- from turning this into a join): on a table autovacuum has not analysed yet (a new
-- ledger, in its first minute) `id = ANY($1)` read the whole table for every batch
-- (~10 ms a batch at 40,000 tickets in the bench).
SELECT t.id, t.order_id, t.status, t.price_nominal, t.refund_id
FROM unnest($1::text[]) AS k(id)
CROSS JOIN LATERAL (SELECT * FROM reconcile.tickets WHERE id = k.id LIMIT 1) AS t

-- name: get_ticket
SELECT * FROM reconcile.tickets WHERE id = $1

-- name: refund_tickets
-- Marks the refund's tickets refunded (not those another refund already took).
UPDATE reconcile.tickets SET status = 'refunded', refund_id = $1, updated_at = now()
WHERE id = ANY($2::text[]) AND status <> 'refunded'

-- name: set_refund_state
UPDATE reconcile.refunds
SET state = $2,
    waiting_since = CASE WHEN $2 = 'waiting_order' THEN coalesce(waiting_since, now()) END,
    sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END,
    updated_at = now()
WHERE id = $1

-- name: get_refund
SELECT * FROM reconcile.refunds WHERE id = $1

-- name: release_ready_refunds
UPDATE reconcile.refunds SET state = 'sent', sent_at = now(), updated_at = now()
WHERE order_id = ANY($1::text[]) AND state = 'ready'
RETURNING id, order_id, doc

-- name: insert_discrepancies
-- New discrepancies, each with its integration.conflict.detected event stored for the
-- announcements worker (runtime/announcements.py) in the same statement. One stored
-- before and still open, or decided by an operator, is kept as it is; one the ledger
-- settled is open again (found again), and announced again under a key of its own.
WITH new AS (
    INSERT INTO reconcile.discrepancies AS d
        (id, kind, refund_id, order_id, ticket_id, event_id, expected_amount, actual_amount,
         description)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::bigint[], $8::bigint[], $9::text[])
    ON CONFLICT (id) DO UPDATE
    SET status = 'open', resolved_at = NULL, resolution_note = '', settled_by_ledger = false,
        order_id = excluded.order_id, event_id = excluded.event_id, expected_amount = excluded.expected_amount,
        actual_amount = excluded.actual_amount, description = excluded.description,
        detected_at = now()
    WHERE d.settled_by_ledger
    RETURNING d.*, (d.xmax = 0) AS inserted
)
INSERT INTO reconcile.announcements (event_type, key, subject, data, dataschema, created_at)
SELECT 'integration.conflict.detected',
       CASE WHEN inserted THEN id::text
            ELSE id::text || '/' || (extract(epoch FROM detected_at) * 1000000)::bigint END,
       CASE WHEN refund_id <> '' THEN 'refunds/' || refund_id ELSE 'orders/' || order_id END,
       jsonb_build_object(
           'discrepancy_id', id::text, 'kind', kind, 'refund_id', refund_id,
           'order_id', order_id, 'ticket_id', ticket_id, 'event_id', event_id,
           'expected_amount', expected_amount, 'actual_amount', actual_amount,
           'description', description, 'detected_at', detected_at),
       'urn:herald:schema:integration.conflict.detected:1.0', detected_at
FROM new
ON CONFLICT (event_type, key) DO NOTHING
-- name: enqueue
-- Each output (one per entity: the caller keeps the latest) unless its entity's latest
-- output has the same content: a replay or a repeat queues nothing new, a return to
-- earlier content (an event paused, then active again) is queued again.
INSERT INTO reconcile.outbox
    (kind, entity_id, content_hash, topic, key, value, headers, ticket_ids, amount)
SELECT k, e, h, t, key, v, hd, ti, a
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[],
            $7::jsonb[], $8::jsonb[], $9::bigint[])
     WITH ORDINALITY AS x(k, e, h, t, key, v, hd, ti, a, n)
WHERE h IS DISTINCT FROM (
    SELECT l.content_hash FROM reconcile.outbox l
    WHERE l.kind = x.k AND l.entity_id = x.e ORDER BY l.id DESC LIMIT 1)
ORDER BY n

-- name: relay_lock
SELECT pg_try_advisory_xact_lock(hashtextextended('reconcile.outbox', 7))

-- name: pending_outputs
-- The oldest unsent outputs, but not one Kafka refused for good within the last $2
-- seconds, nor a refused one whose entity has a later output queued (that one goes
-- instead), nor one that depends on a blocking output: its event, its order or (a
-- refund) itself refused within those $2 seconds, or refused with a later version
-- queued and not sent yet (Vibeapp never gets an order before some version of its event,
-- nor a refund before its order; the later version itself goes). Without refused
-- outputs (the usual case) the blocking set is empty, and the second test is decided
-- once, by the first.
WITH refused AS MATERIALIZED (
    SELECT f.kind, f.entity_id, f.refused_at,
           EXISTS (SELECT 1 FROM reconcile.outbox AS l
                   WHERE l.kind = f.kind AND l.entity_id = f.entity_id AND l.id > f.id)
               AS replaced
    FROM reconcile.outbox AS f
    WHERE f.sent_at IS NULL AND f.refused_at IS NOT NULL AND f.superseded_at IS NULL),
blocking AS MATERIALIZED (
    SELECT kind, entity_id, replaced FROM refused
    WHERE replaced OR refused_at >= now() - make_interval(secs => $2))
SELECT o.id, o.kind, o.entity_id, o.content_hash, o.topic, o.key, o.value, o.headers
FROM reconcile.outbox AS o
WHERE o.sent_at IS NULL AND o.superseded_at IS NULL
  AND (o.refused_at IS NULL
       OR o.refused_at < now() - make_interval(secs => $2)
          AND NOT EXISTS (SELECT 1 FROM reconcile.outbox AS l  -- this one has a later version
                          WHERE l.kind = o.kind AND l.entity_id = o.entity_id AND l.id > o.id))
  AND (
    NOT EXISTS (SELECT 1 FROM blocking)
    OR NOT EXISTS (
        SELECT 1 FROM blocking AS f
        WHERE NOT (f.replaced AND f.kind = o.kind AND f.entity_id = o.entity_id)
          AND ((f.kind = 'event' AND f.entity_id = CASE o.kind
                    WHEN 'event' THEN o.entity_id
                    WHEN 'order' THEN (SELECT event_id FROM reconcile.orders WHERE id = o.entity_id)
                    ELSE (SELECT event_id FROM reconcile.refunds WHERE id = o.entity_id) END)
            OR (f.kind = 'order' AND f.entity_id = CASE o.kind
                    WHEN 'order' THEN o.entity_id
                    WHEN 'refund' THEN (SELECT order_id FROM reconcile.refunds WHERE id = o.entity_id)
                    END))))
ORDER BY o.id LIMIT $1
-- name: mark_refused
UPDATE reconcile.outbox SET refused_at = now(), last_error = left($2, 500) WHERE id = $1

-- name: output_owners
-- The event, order and refund an output ($1 kind, $2 entity id) concerns.
SELECT coalesce(CASE $1::text
           WHEN 'event' THEN $2::text
           WHEN 'order' THEN (SELECT event_id FROM reconcile.orders WHERE id = $2)
           ELSE (SELECT event_id FROM reconcile.refunds WHERE id = $2) END, '') AS event_id,
       coalesce(CASE $1::text
           WHEN 'order' THEN $2::text
           WHEN 'refund' THEN (SELECT order_id FROM reconcile.refunds WHERE id = $2) END,
           '') AS order_id,
       CASE $1::text WHEN 'refund' THEN $2::text ELSE '' END AS refund_id

-- name: mark_sent
-- Outputs $1 went. Refused ones of the same entities queued before them are superseded
-- (Vibeapp has newer content under their key). Returned: those, and the ones that went
-- after they had been refused (a retry got through): their discrepancies are settled.
WITH sent AS (
    UPDATE reconcile.outbox SET sent_at = now() WHERE id = ANY($1::bigint[])
    RETURNING id, kind, entity_id, content_hash, refused_at IS NOT NULL AS was_refused),
superseded AS (
    UPDATE reconcile.outbox AS o SET superseded_at = now()
    FROM sent AS s
    WHERE o.sent_at IS NULL AND o.refused_at IS NOT NULL AND o.superseded_at IS NULL
      AND o.kind = s.kind AND o.entity_id = s.entity_id AND o.id < s.id
      AND NOT (o.id = ANY($1::bigint[]))  -- sent now (a row is updated once a statement)
    RETURNING o.kind, o.entity_id, o.content_hash)
SELECT kind, entity_id, content_hash FROM superseded
UNION ALL
SELECT kind, entity_id, content_hash FROM sent WHERE was_refused

-- name: overdue_orders
SELECT o.id, o.event_id, o.parked_at FROM reconcile.orders o
WHERE o.delivery = 'parked' AND o.parked_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM reconcile.discrepancies d
                  WHERE d.order_id = o.id AND d.kind = 'order_parked_too_long')
ORDER BY o.parked_at LIMIT 100

-- name: waiting_refunds_with_order
-- Refunds waiting for an order the ledger has: a refund naming another event than its
-- order's takes that event's lock, so its transaction and its order's can run at once
-- and neither see the other. With the events to lock.
SELECT r.id, r.event_id, o.event_id AS order_event_id
FROM reconcile.refunds r JOIN reconcile.orders o ON o.id = r.order_id
WHERE r.state = 'waiting_order'
ORDER BY r.waiting_since LIMIT 100

-- name: order_event
SELECT event_id FROM reconcile.orders WHERE id = $1

-- name: settle_other_unknown_orders
-- Refund $1 is held for unknown order $2: its open unknown_order findings of orders it
-- no longer names are settled ($3: the note).
UPDATE reconcile.discrepancies
SET status = 'accepted', resolved_at = now(), resolution_note = $3, settled_by_ledger = true
WHERE refund_id = $1 AND refund_id <> '' AND kind = 'unknown_order' AND status = 'open'
  AND order_id <> $2

-- name: overdue_refunds
-- (Once an operator accepted the unknown order, the refund just waits for it; a newer
-- version naming another unknown order is reported again.)
SELECT r.id, r.event_id FROM reconcile.refunds r
WHERE r.state = 'waiting_order' AND r.waiting_since < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM reconcile.discrepancies d
                  WHERE d.refund_id = r.id AND d.kind = 'unknown_order'
                    AND d.order_id = r.order_id
                    AND (d.status = 'open' OR NOT d.settled_by_ledger))
ORDER BY r.waiting_since LIMIT 100

-- name: report_orders
-- Orders in scope ($1 event id, or [$2, $3) first seen), with what Vibeapp was sent.
-- The tickets Vibeapp has of an order: those the latest version it was sent lists, and
-- the refunded ones an earlier version listed (Ticketland republishes an order without
-- a ticket it refunded; Vibeapp got that ticket sold, then its refund, and the ledger
-- keeps it sold and refunded).
SELECT o.id, o.event_id, o.organizer_id, o.status, o.delivery,
       tk.tickets, tk.amount, tk.refunded, cur.amounts,
       ob.queued, ob.sent_at,
       coalesce(jsonb_array_length(ob.latest), 0) + dr.tickets AS tickets_sent,
       (SELECT EXISTS (SELECT 1 FROM reconcile.events e WHERE e.id = o.event_id)) AS event_known,
       ev.queued AS event_queued, ev.sent_at AS event_sent_at
FROM reconcile.orders o
CROSS JOIN LATERAL (
    SELECT count(*) AS tickets, coalesce(sum(price_nominal), 0)::bigint AS amount,
           count(*) FILTER (WHERE status = 'refunded') AS refunded
    FROM reconcile.tickets t WHERE t.order_id = o.id AND t.in_order) tk
CROSS JOIN LATERAL (  -- the sold amount per currency
    SELECT coalesce(jsonb_object_agg(currency, amount), '{}') AS amounts  -- '': none given
    FROM (SELECT currency, sum(price_nominal)::bigint AS amount FROM reconcile.tickets t
          WHERE t.order_id = o.id AND t.in_order GROUP BY currency) c) cur
CROSS JOIN LATERAL (
    SELECT count(*) AS queued, min(sent_at) AS sent_at,
           -- the latest version of the order Vibeapp was sent: its ticket ids
           (array_agg(ticket_ids ORDER BY id DESC) FILTER (WHERE sent_at IS NOT NULL))[1]
               AS latest
    FROM reconcile.outbox WHERE kind = 'order' AND entity_id = o.id) ob
CROSS JOIN LATERAL (
    SELECT count(*) AS tickets FROM reconcile.tickets t
    WHERE t.order_id = o.id AND t.in_order AND t.status = 'refunded'
      AND ob.latest IS NOT NULL AND NOT ob.latest ? t.id
      AND EXISTS (SELECT 1 FROM reconcile.outbox x
                  WHERE x.kind = 'order' AND x.entity_id = o.id AND x.sent_at IS NOT NULL
                    AND x.ticket_ids ? t.id)) dr
CROSS JOIN LATERAL (
    SELECT count(*) AS queued, min(sent_at) AS sent_at
    FROM reconcile.outbox WHERE kind = 'event' AND entity_id = o.event_id) ev
WHERE ($1::text IS NULL OR o.event_id = $1)
  AND ($2::timestamptz IS NULL OR o.first_seen >= $2)
  AND ($3::timestamptz IS NULL OR o.first_seen < $3)
ORDER BY o.id

-- name: report_refunds
-- Under their order's event and organizer (the refund's own, its order unknown): a
-- refund naming another event is its order's event's money.
-- Its currency: that of the tickets it refunded ("+"-joined when they differ), else of
-- its order's.
SELECT r.id, r.order_id, coalesce(o.event_id, r.event_id) AS event_id,
       coalesce(o.organizer_id, r.organizer_id) AS organizer_id, r.status, r.state,
       r.customer, o.delivery AS order_delivery, ob.queued, ob.sent_at,
       coalesce(
           (SELECT string_agg(DISTINCT nullif(t.currency, ''), '+' ORDER BY nullif(t.currency, ''))
            FROM reconcile.tickets t WHERE t.refund_id = r.id),
           (SELECT string_agg(DISTINCT nullif(t.currency, ''), '+' ORDER BY nullif(t.currency, ''))
            FROM reconcile.tickets t WHERE t.order_id = r.order_id), '') AS currency
FROM reconcile.refunds r
LEFT JOIN reconcile.orders o ON o.id = r.order_id
CROSS JOIN LATERAL (
    SELECT count(*) AS queued, min(sent_at) AS sent_at
    FROM reconcile.outbox WHERE kind = 'refund' AND entity_id = r.id) ob
WHERE ($1::text IS NULL OR coalesce(o.event_id, r.event_id) = $1)
  AND ($2::timestamptz IS NULL OR r.first_seen >= $2)
  AND ($3::timestamptz IS NULL OR r.first_seen < $3)
ORDER BY r.id

-- name: report_refunded_tickets
-- Tickets of the orders in scope that the ledger has refunded or Vibeapp was sent as
-- refunded: how many refund records carried each (sent ones only).
WITH scope AS (SELECT unnest($1::text[]) AS order_id),
ledger AS (
    SELECT t.id, t.refund_id FROM reconcile.tickets t JOIN scope USING (order_id)
    WHERE t.status = 'refunded'),
sent AS (
    SELECT tid.value AS id, count(*) AS records, count(DISTINCT ob.entity_id) AS refunds
    FROM reconcile.outbox ob
    CROSS JOIN LATERAL jsonb_array_elements_text(ob.ticket_ids) tid
    JOIN reconcile.tickets t ON t.id = tid.value JOIN scope USING (order_id)
    WHERE ob.kind = 'refund' AND ob.sent_at IS NOT NULL
    GROUP BY tid.value)
SELECT x.id, x.refund_id, x.refunded, x.records, x.refunds, t.event_id, o.organizer_id
FROM (SELECT coalesce(l.id, s.id) AS id, l.refund_id, l.id IS NOT NULL AS refunded,
             coalesce(s.records, 0) AS records, coalesce(s.refunds, 0) AS refunds
      FROM ledger l FULL JOIN sent s ON s.id = l.id) x
JOIN reconcile.tickets t ON t.id = x.id
JOIN reconcile.orders o ON o.id = t.order_id
ORDER BY 1

-- name: report_inputs
SELECT kind, count(*) AS records, count(DISTINCT entity_id) AS entities,
       count(DISTINCT entity_id) FILTER (WHERE status = 'APPROVED') AS approved,
       count(*) FILTER (WHERE NOT CASE kind
           WHEN 'order' THEN EXISTS (SELECT 1 FROM reconcile.orders o WHERE o.id = i.entity_id)
           WHEN 'refund' THEN EXISTS (SELECT 1 FROM reconcile.refunds r WHERE r.id = i.entity_id)
           ELSE EXISTS (SELECT 1 FROM reconcile.events e WHERE e.id = i.entity_id) END)
           AS missing
FROM reconcile.inputs i
WHERE ($1::text[] IS NULL OR i.entity_id = ANY($1))
  AND ($2::timestamptz IS NULL OR i.received_at >= $2)
  AND ($3::timestamptz IS NULL OR i.received_at < $3)
GROUP BY kind

-- name: insert_report
INSERT INTO reconcile.reports (id, report) VALUES ($1, $2)

-- name: get_report
SELECT report FROM reconcile.reports WHERE id = $1

-- name: event_doc
SELECT doc FROM reconcile.events WHERE id = $1

-- name: outputs_of
SELECT count(*) FROM reconcile.outbox WHERE kind = $1 AND entity_id = $2

-- name: list_discrepancies
-- Newest first, after the cursor ($4, $5: NULL on the first page); total counts every
-- discrepancy the filter matches.
SELECT *,
       (SELECT count(*) FROM reconcile.discrepancies
        WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR refund_id = $3)) AS total
FROM reconcile.discrepancies
WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR refund_id = $3)
  AND ($4::timestamptz IS NULL OR (detected_at, id) < ($4, $5))
ORDER BY detected_at DESC, id DESC
LIMIT $6

-- name: count_discrepancies
SELECT count(*) FROM reconcile.discrepancies
WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR refund_id = $3)

-- name: get_discrepancy_for_update
SELECT * FROM reconcile.discrepancies WHERE id = $1 FOR UPDATE

-- name: resolve_discrepancy
UPDATE reconcile.discrepancies
SET status = $2, resolution_note = $3, resolved_at = now(), settled_by_ledger = false
WHERE id = $1
RETURNING *

-- name: refund_discrepancies
-- A refund's discrepancies, open or decided by an operator (not those the ledger settled).
SELECT id, status FROM reconcile.discrepancies WHERE refund_id = $1 AND NOT settled_by_ledger

-- name: open_discrepancies_in_scope
SELECT count(*) FROM reconcile.discrepancies
WHERE status = 'open' AND ($1::text IS NULL OR event_id = $1)
  AND ($2::timestamptz IS NULL OR detected_at >= $2)
  AND ($3::timestamptz IS NULL OR detected_at < $3)

-- name: get_discrepancy
SELECT * FROM reconcile.discrepancies WHERE id = $1

-- name: upsert_organizers
-- In id order: transactions of other events (other replicas, the other parts of a
-- batch) may update the same organizers, and rows locked in one order cannot deadlock.
INSERT INTO reconcile.organizers AS g (id, name, legals)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) ORDER BY 1
ON CONFLICT (id) DO UPDATE SET name = excluded.name, legals = excluded.legals, updated_at = now()
WHERE (g.name, g.legals) IS DISTINCT FROM (excluded.name, excluded.legals)

-- name: upsert_events
-- The events applied (not older than the ledger's version).
INSERT INTO reconcile.events AS e (id, organizer_id, name, doc, source_time)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[])
ON CONFLICT (id) DO UPDATE
SET organizer_id = excluded.organizer_id, name = excluded.name, doc = excluded.doc,
    source_time = excluded.source_time, updated_at = now()
WHERE excluded.source_time >= e.source_time
RETURNING id

-- name: release_parked_orders_of
UPDATE reconcile.orders SET delivery = 'sent', sent_at = now(), parked_at = NULL
WHERE event_id = ANY($1::text[]) AND delivery = 'parked'
RETURNING id, doc

-- name: upsert_orders
-- The orders applied, each with its delivery before (NULL: new). $8 is the delivery
-- each would get now; an order Vibeapp has stays sent.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[], $7::bigint[], $8::text[])
        AS x(id, number, status, event_id, organizer_id, doc, source_time, delivery)),
before AS (SELECT o.id, o.delivery FROM reconcile.orders o JOIN input USING (id))
INSERT INTO reconcile.orders AS o
    (id, number, status, event_id, organizer_id, doc, source_time, delivery, parked_at,
     sent_at)
SELECT id, number, status, event_id, organizer_id, doc, source_time, delivery,
       CASE WHEN delivery = 'parked' THEN now() END, CASE WHEN delivery = 'sent' THEN now() END
FROM input
ON CONFLICT (id) DO UPDATE
SET number = excluded.number, status = excluded.status, event_id = excluded.event_id,
    organizer_id = excluded.organizer_id, doc = excluded.doc,
    source_time = excluded.source_time, updated_at = now(),
    delivery = CASE WHEN o.delivery = 'sent' THEN 'sent' ELSE excluded.delivery END,
    parked_at = CASE WHEN o.delivery <> 'sent' AND excluded.delivery = 'parked'
                     THEN coalesce(o.parked_at, now()) END,
    sent_at = CASE WHEN o.delivery = 'sent' THEN o.sent_at
                   WHEN excluded.delivery = 'sent' THEN now() END
WHERE excluded.source_time >= o.source_time
RETURNING o.id, (SELECT b.delivery FROM before b WHERE b.id = o.id) AS before

-- name: known_events
SELECT id FROM reconcile.events WHERE id = ANY($1::text[])

-- name: waiting_refunds_of
SELECT id, doc FROM reconcile.refunds
WHERE order_id = ANY($1::text[]) AND state = 'waiting_order'
ORDER BY first_seen, id

-- name: refund_history_many
INSERT INTO reconcile.refund_history (refund_id, status, source_time)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT DO NOTHING

-- name: upsert_refunds
-- The refunds applied, with their state (new: 'open') and the document they had before
-- (NULL: new).
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[], $7::bigint[], $8::bigint[], $9::bigint[],
                         $10::bigint[], $11::bigint[])
        AS x(id, status, order_id, event_id, organizer_id, doc, source_time,
             refund_nominal, customer, org, agent)),
before AS (SELECT r.id, r.doc FROM reconcile.refunds r JOIN input USING (id))
INSERT INTO reconcile.refunds AS r
    (id, status, order_id, event_id, organizer_id, doc, source_time,
     refund_nominal, customer, org, agent, state)
SELECT *, 'open' FROM input
ON CONFLICT (id) DO UPDATE
SET status = excluded.status, order_id = excluded.order_id, event_id = excluded.event_id,
    organizer_id = excluded.organizer_id, doc = excluded.doc,
    source_time = excluded.source_time, refund_nominal = excluded.refund_nominal,
    customer = excluded.customer, org = excluded.org, agent = excluded.agent,
    updated_at = now()
WHERE excluded.source_time >= r.source_time
RETURNING r.id, r.state, (SELECT b.doc FROM before b WHERE b.id = r.id) AS before

-- name: orders_by_id
-- One index probe per id (see tickets_by_id).
SELECT o.id, o.delivery, o.doc, o.event_id, o.organizer_id
FROM unnest($1::text[]) AS k(id)
CROSS JOIN LATERAL (SELECT * FROM reconcile.orders WHERE id = k.id LIMIT 1) AS o

-- name: refund_tickets_many
UPDATE reconcile.tickets t SET status = 'refunded', refund_id = x.refund_id, updated_at = now()
FROM unnest($1::text[], $2::text[]) AS x(ticket_id, refund_id)
WHERE t.id = x.ticket_id AND t.status <> 'refunded'

-- name: set_refund_states
UPDATE reconcile.refunds r
SET state = x.state,
    waiting_since = CASE WHEN x.state = 'waiting_order' THEN coalesce(r.waiting_since, now()) END,
    sent_at = CASE WHEN x.state = 'sent' THEN now() ELSE r.sent_at END,
    updated_at = now()
FROM unnest($1::text[], $2::text[]) AS x(id, state)
WHERE r.id = x.id

-- name: refunds_held_for_their_order
-- Held refunds whose only open discrepancy is that their order was unknown.
SELECT r.id, r.doc FROM reconcile.refunds r
WHERE r.order_id = ANY($1::text[]) AND r.state = 'held'
  AND EXISTS (SELECT 1 FROM reconcile.discrepancies d
              WHERE d.refund_id = r.id AND d.kind = 'unknown_order' AND d.status = 'open')
  AND NOT EXISTS (SELECT 1 FROM reconcile.discrepancies d
                  WHERE d.refund_id = r.id AND d.kind <> 'unknown_order' AND d.status = 'open')
ORDER BY r.first_seen, r.id

-- name: settle_arrived
-- What was missing arrived: an order's or refund's waiting discrepancy is settled.
UPDATE reconcile.discrepancies
SET status = 'accepted', resolved_at = now(), resolution_note = $3, settled_by_ledger = true
WHERE kind = $1 AND status = 'open'
  AND CASE WHEN $1 = 'unknown_order' THEN refund_id ELSE order_id END = ANY($2::text[])

-- name: outbox_backlog
-- Outputs not sent yet (counted up to $1), set-aside refused ones included (Vibeapp
-- has none of them) but not superseded ones, and the age in seconds of the oldest (0
-- when none).
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM reconcile.outbox WHERE sent_at IS NULL AND superseded_at IS NULL
        LIMIT $1) AS p) AS pending,
    coalesce((SELECT extract(epoch FROM clock_timestamp() - queued_at)
              FROM reconcile.outbox WHERE sent_at IS NULL AND superseded_at IS NULL
              ORDER BY id LIMIT 1), 0)::float8
        AS lag

-- name: tickets_refunded_by
-- The tickets refunds $1 refunded, with their order's document.
SELECT t.id, t.refund_id, o.doc AS order_doc
FROM reconcile.tickets t JOIN reconcile.orders o ON o.id = t.order_id
WHERE t.refund_id = ANY($1::text[])
-- name: unrefund_tickets
-- Tickets whose refund was withdrawn: back to what their order says ($4: whether it
-- lists them; one it no longer does, kept while refunded, is out of the sale now).
UPDATE reconcile.tickets t
SET status = x.status, refund_id = NULL, in_order = t.in_order AND x.listed,
    updated_at = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) AS x(id, status, refund_id, listed)
WHERE t.id = x.id AND t.refund_id = x.refund_id

-- name: settle_withdrawn
-- A refund Ticketland rejected before it went: its open discrepancies need no decision.
UPDATE reconcile.discrepancies
SET status = 'rejected', resolved_at = now(), resolution_note = $2, settled_by_ledger = true
WHERE refund_id = ANY($1::text[]) AND refund_id <> '' AND status = 'open'

-- name: settle_superseded
-- The output_refused discrepancies $1 of outputs ($2 kind, $3 entity, $4 content hash)
-- that went, or a later version of which went, unless the same content is refused and
-- pending again.
UPDATE reconcile.discrepancies AS d
SET status = 'accepted', resolved_at = now(), resolution_note = $5, settled_by_ledger = true
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS x(id, kind, entity_id, hash)
WHERE d.id = x.id AND d.status = 'open'
  AND NOT EXISTS (SELECT 1 FROM reconcile.outbox AS o
                  WHERE o.kind = x.kind AND o.entity_id = x.entity_id
                    AND o.content_hash = x.hash AND o.sent_at IS NULL
                    AND o.refused_at IS NOT NULL AND o.superseded_at IS NULL)

-- name: settle_not_found_again
-- Refunds $1 were checked again (approved again, or a newer approved version came): their
-- open discrepancies of the check kinds $3 not found this time (not among $2) no
-- longer hold.
UPDATE reconcile.discrepancies
SET status = 'accepted', resolved_at = now(), resolution_note = $4, settled_by_ledger = true
WHERE refund_id = ANY($1::text[]) AND refund_id <> '' AND status = 'open'
  AND kind = ANY($3::text[]) AND NOT (id = ANY($2::uuid[]))

-- name: decided_discrepancies
-- Which of discrepancies $1 an operator resolved (a refund approved again after going
-- back); one the ledger settled is found again instead (see insert_discrepancies).
SELECT id, status FROM reconcile.discrepancies
WHERE id = ANY($1::uuid[]) AND status <> 'open' AND NOT settled_by_ledger

-- name: refund_lock_keys
-- The events whose locks an operator's action on refund $1 takes: its own and its order's.
SELECT array_remove(ARRAY[r.event_id, o.event_id], NULL)
FROM reconcile.refunds r LEFT JOIN reconcile.orders o ON o.id = r.order_id
WHERE r.id = $1

-- name: order_events
-- The events of orders $1 (one index probe each, see tickets_by_id).
SELECT DISTINCT o.event_id
FROM unnest($1::text[]) AS k(id)
CROSS JOIN LATERAL (SELECT event_id FROM reconcile.orders WHERE id = k.id LIMIT 1) AS o

-- name: take_dead_inputs
-- The bad input records not dead-lettered before (a replay of the same coordinates is
-- skipped, also once retention purged their rows: see take_inputs), by their position
-- in $1..$3.
INSERT INTO reconcile.dead_inputs (topic, partition, "offset", reason)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])
    AS x(topic, partition, "offset", reason)
WHERE NOT EXISTS (SELECT 1 FROM reconcile.input_horizon h
                  WHERE h.topic = x.topic AND h.partition = x.partition
                    AND x."offset" <= h."offset")
ON CONFLICT DO NOTHING
RETURNING topic, partition, "offset"

-- name: purge_inputs
-- Retention (runtime/retention.py): at most $1 input records taken more than $2 seconds
-- ago, at or below their partition's input_progress (every record below was taken or
-- dead-lettered: a higher one taken before a crash cut its batch off stays until the
-- replay has taken the rest); their partitions' horizons move up to the greatest offset
-- deleted, so a replay still skips them. The count deleted.
WITH gone AS (
    DELETE FROM reconcile.inputs WHERE ctid = ANY(ARRAY(
        SELECT i.ctid FROM reconcile.inputs i
        JOIN reconcile.input_progress p
          ON p.topic = i.topic AND p.partition = i.partition AND i."offset" <= p."offset"
        WHERE i.received_at < now() - make_interval(secs => $2)
        LIMIT $1))
    RETURNING topic, partition, "offset"),
horizon AS (
    INSERT INTO reconcile.input_horizon AS h (topic, partition, "offset", purged_before)
    SELECT topic, partition, max("offset"), now() - make_interval(secs => $2)
    FROM gone GROUP BY topic, partition
    ON CONFLICT (topic, partition) DO UPDATE
    SET "offset" = greatest(h."offset", excluded."offset"),
        purged_before = greatest(h.purged_before, excluded.purged_before))
SELECT count(*) FROM gone

-- name: purge_dead_inputs
-- The same for input records dead-lettered more than $2 seconds ago (see purge_inputs).
WITH gone AS (
    DELETE FROM reconcile.dead_inputs WHERE ctid = ANY(ARRAY(
        SELECT d.ctid FROM reconcile.dead_inputs d
        JOIN reconcile.input_progress p
          ON p.topic = d.topic AND p.partition = d.partition AND d."offset" <= p."offset"
        WHERE d.dead_at < now() - make_interval(secs => $2)
        LIMIT $1))
    RETURNING topic, partition, "offset"),
horizon AS (
    INSERT INTO reconcile.input_horizon AS h (topic, partition, "offset", purged_before)
    SELECT topic, partition, max("offset"), now() - make_interval(secs => $2)
    FROM gone GROUP BY topic, partition
    ON CONFLICT (topic, partition) DO UPDATE
    SET "offset" = greatest(h."offset", excluded."offset"),
        purged_before = greatest(h.purged_before, excluded.purged_before))
SELECT count(*) FROM gone

-- name: record_progress
-- Every record of a batch is durable (taken or dead-lettered): the last offset of each
-- of its partitions ($1..$3), as every one before it was too (see purge_inputs).
INSERT INTO reconcile.input_progress AS p (topic, partition, "offset")
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
ON CONFLICT (topic, partition) DO UPDATE SET "offset" = greatest(p."offset", excluded."offset")
WHERE p."offset" < excluded."offset"

-- name: purge_reports
-- Reports stored more than $2 seconds ago, at most $1 of them.
DELETE FROM reconcile.reports WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM reconcile.reports
    WHERE created_at < now() - make_interval(secs => $2)
    LIMIT $1))

-- name: inputs_purged_before
-- Input records taken before this were purged (NULL: none ever was).
SELECT max(purged_before) FROM reconcile.input_horizon

-- name: scope_first_seen
-- When the oldest entity of an event's scope ($1: the event, its orders and their
-- refunds) was first seen: its input records reach back that far.
SELECT least(
    (SELECT first_seen FROM reconcile.events WHERE id = $1),
    (SELECT min(first_seen) FROM reconcile.orders WHERE event_id = $1),
    (SELECT min(r.first_seen) FROM reconcile.refunds r
     LEFT JOIN reconcile.orders o ON o.id = r.order_id
     WHERE coalesce(o.event_id, r.event_id) = $1))
