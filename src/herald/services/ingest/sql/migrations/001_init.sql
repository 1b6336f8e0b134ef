-- Ingest owns the event-type catalog, accepted events, idempotency keys and the outbox.
CREATE SCHEMA IF NOT EXISTS ingest;

CREATE TABLE ingest.event_types (
    name                text        NOT NULL,
    data_version        text        NOT NULL,
    description         text        NOT NULL DEFAULT '',
    json_schema         jsonb       NOT NULL,
    id_must_be_uuid     boolean     NOT NULL DEFAULT false,
    source_pattern      text        NOT NULL DEFAULT '',
    required_attributes text[]      NOT NULL DEFAULT '{}',
    builtin             boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, data_version)
);

-- Every accepted event; (source, id) is unique, so a repeat is recognised.
CREATE TABLE ingest.events (
    source      text        NOT NULL,
    id          text        NOT NULL,
    type        text        NOT NULL,
    fingerprint bytea       NOT NULL,
    attributes  jsonb       NOT NULL,
    data        bytea       NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id)
);
CREATE INDEX events_accepted_at ON ingest.events (accepted_at);

-- Idempotency keys, unique on (key, endpoint, actor), kept 72 hours (Bitrix24 seed 001).
CREATE TABLE ingest.idempotency_keys (
    key         text        NOT NULL,
    endpoint    text        NOT NULL,
    actor       text        NOT NULL,
    fingerprint bytea       NOT NULL,
    event_id    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (key, endpoint, actor)
);
CREATE INDEX idempotency_keys_expires_at ON ingest.idempotency_keys (expires_at);

-- The transactional outbox: one ready-to-send Kafka record per accepted event.
-- lane = hash(record key) mod 16: one relay at a time per lane keeps per-key order.
CREATE TABLE ingest.outbox (
    id           bigserial   PRIMARY KEY,
    lane         smallint    NOT NULL,
    topic        text        NOT NULL,
    key          bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    event_type   text        NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_pending ON ingest.outbox (lane, id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON ingest.outbox (published_at) WHERE published_at IS NOT NULL;
