-- Operational events (alerts) stored before they are published through ingest, so one
-- raised while ingest is away is published when it is back (runtime/announcements.py).
CREATE TABLE {schema}.announcements (
    event_type text        NOT NULL,
    key        text        NOT NULL,  -- the event id derives from (event_type, key)
    subject    text        NOT NULL,
    data       jsonb       NOT NULL,
    dataschema text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),  -- the event's time
    refused_at timestamptz,  -- ingest answered INVALID_ARGUMENT: kept, not retried
    last_error text,
    PRIMARY KEY (event_type, key)
);
CREATE INDEX announcements_pending ON {schema}.announcements (created_at) WHERE refused_at IS NULL;
