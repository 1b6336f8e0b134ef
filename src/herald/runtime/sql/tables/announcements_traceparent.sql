-- The trace of the event an alert is about ('' for none): the alert is published under
-- it (the call's traceparent), so the alert's own hops join that event's trace.
ALTER TABLE {schema}.announcements ADD COLUMN traceparent text NOT NULL DEFAULT '';
