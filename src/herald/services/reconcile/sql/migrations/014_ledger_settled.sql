-- Discrepancies the ledger settled itself (what was missing arrived, the refund was
-- rejected or checked again without the finding, the output was superseded), told
-- apart from an operator's decision: only an operator's decision stands when a refund is
-- checked again, and one the ledger settled is open again when it is found again.
-- Those settled before this migration are known by their notes ("settled: …").
ALTER TABLE reconcile.discrepancies ADD COLUMN settled_by_ledger boolean NOT NULL DEFAULT false;
UPDATE reconcile.discrepancies SET settled_by_ledger = true
WHERE status <> 'open' AND resolution_note LIKE 'settled: %';
-- The tickets a refund refunded: undone when it is withdrawn, or changed before it went.
CREATE INDEX tickets_refund ON reconcile.tickets (refund_id) WHERE refund_id IS NOT NULL;
