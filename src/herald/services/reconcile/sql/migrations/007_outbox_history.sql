-- An entity's outputs are its history: content it had before and has again (an event
-- paused, then active again) is queued again; only a repeat of its latest content is
-- not. The index finds an entity's outputs, latest first.
ALTER TABLE reconcile.outbox DROP CONSTRAINT outbox_kind_entity_id_content_hash_key;
CREATE INDEX outbox_entity ON reconcile.outbox (kind, entity_id, id);
