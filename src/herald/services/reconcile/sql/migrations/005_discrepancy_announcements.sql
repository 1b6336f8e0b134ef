-- Discrepancies are announced through the runtime's announcements table (stored by the
-- statement that stores them, queries.sql insert_discrepancies) instead of a
-- published_at column polled by a worker of its own: what was not published yet moves
-- there, with the same event (its id derives from the discrepancy id, as before).
INSERT INTO reconcile.announcements (event_type, key, subject, data, dataschema, created_at)
SELECT 'integration.conflict.detected', id::text,
       CASE WHEN refund_id <> '' THEN 'refunds/' || refund_id ELSE 'orders/' || order_id END,
       jsonb_build_object(
           'discrepancy_id', id::text, 'kind', kind, 'refund_id', refund_id,
           'order_id', order_id, 'ticket_id', ticket_id, 'event_id', event_id,
           'expected_amount', expected_amount, 'actual_amount', actual_amount,
           'description', description, 'detected_at', detected_at),
       'urn:herald:schema:integration.conflict.detected:1.0', detected_at
FROM reconcile.discrepancies
WHERE published_at IS NULL
ON CONFLICT (event_type, key) DO NOTHING;
DROP INDEX reconcile.discrepancies_unpublished;
ALTER TABLE reconcile.discrepancies DROP COLUMN published_at;
