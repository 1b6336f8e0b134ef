CREATE SCHEMA IF NOT EXISTS reconcile;

-- Every input record taken (Kafka coordinates), so that a replay is recognised and the
-- report can count what the inputs delivered.
CREATE TABLE reconcile.inputs (
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    "offset"    bigint      NOT NULL,
    kind        text        NOT NULL,  -- event, order, refund
    entity_id   text        NOT NULL,
    status      text        NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX inputs_received ON reconcile.inputs (received_at);

CREATE TABLE reconcile.organizers (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    legals     bytea,                      -- ticketland.v1.LegalEntity
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events as last received (doc = the ticketland.v1.Event, serialized).
CREATE TABLE reconcile.events (
    id           text        PRIMARY KEY,
    organizer_id text        NOT NULL,
    name         text        NOT NULL,
    doc          bytea       NOT NULL,
    source_time  bigint      NOT NULL DEFAULT 0,  -- the record's updated_at (ms)
    first_seen   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- delivery: parked (event unknown), sent (queued for vibe.orders), not_sold.
CREATE TABLE reconcile.orders (
    id           text        PRIMARY KEY,
    number       text        NOT NULL,
    status       text        NOT NULL,
    event_id     text        NOT NULL,
    organizer_id text        NOT NULL,
    doc          bytea       NOT NULL,  -- ticketland.v1.Order
    source_time  bigint      NOT NULL DEFAULT 0,
    delivery     text        NOT NULL,
    parked_at    timestamptz,
    sent_at      timestamptz,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_parked ON reconcile.orders (event_id) WHERE delivery = 'parked';
CREATE INDEX orders_event ON reconcile.orders (event_id);

-- status: active, used, cancelled, refunded.
CREATE TABLE reconcile.tickets (
    id            text        PRIMARY KEY,
    order_id      text        NOT NULL,
    event_id      text        NOT NULL,
    barcode       text        NOT NULL,
    price_nominal bigint      NOT NULL,
    currency      text        NOT NULL,
    status        text        NOT NULL,
    refund_id     text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_order ON reconcile.tickets (order_id);

-- state: open (not approved yet), waiting_order (approved, order unknown), held (open
-- discrepancy), ready (approved and checked, order not sent yet), sent, rejected
-- (by Ticketland), blocked (a discrepancy was rejected).
CREATE TABLE reconcile.refunds (
    id             text        PRIMARY KEY,
    status         text        NOT NULL,
    order_id       text        NOT NULL,
    event_id       text        NOT NULL,
    organizer_id   text        NOT NULL,
    doc            bytea       NOT NULL,  -- ticketland.v1.RefundRequest
    source_time    bigint      NOT NULL DEFAULT 0,
    refund_nominal bigint      NOT NULL,
    customer       bigint      NOT NULL,
    org            bigint      NOT NULL,
    agent          bigint      NOT NULL,
    state          text        NOT NULL,
    waiting_since  timestamptz,
    sent_at        timestamptz,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order ON reconcile.refunds (order_id);
CREATE INDEX refunds_waiting ON reconcile.refunds (waiting_since) WHERE state = 'waiting_order';

CREATE TABLE reconcile.refund_history (
    refund_id   text        NOT NULL,
    status      text        NOT NULL,
    source_time bigint      NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, status)
);

-- One finding per (refund or order, kind, ticket); a replay finds it again and adds nothing.
CREATE TABLE reconcile.discrepancies (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'open',  -- open, accepted, rejected
    refund_id       text        NOT NULL DEFAULT '',
    order_id        text        NOT NULL DEFAULT '',
    ticket_id       text        NOT NULL DEFAULT '',
    event_id        text        NOT NULL DEFAULT '',
    expected_amount bigint      NOT NULL DEFAULT 0,
    actual_amount   bigint      NOT NULL DEFAULT 0,
    description     text        NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolution_note text        NOT NULL DEFAULT '',
    published_at    timestamptz
);
CREATE INDEX discrepancies_list ON reconcile.discrepancies (detected_at DESC, id);
CREATE INDEX discrepancies_refund ON reconcile.discrepancies (refund_id) WHERE refund_id <> '';
CREATE INDEX discrepancies_unpublished ON reconcile.discrepancies (detected_at)
    WHERE published_at IS NULL;

-- Records for Vibeapp, written in the ledger's transaction and sent by the relay in id
-- order (events, then orders, then refunds of a batch). One row per (kind, entity,
-- content): a replay or a repeat queues nothing new.
CREATE TABLE reconcile.outbox (
    id           bigserial   PRIMARY KEY,
    kind         text        NOT NULL,  -- event, order, refund
    entity_id    text        NOT NULL,
    content_hash text        NOT NULL,
    topic        text        NOT NULL,
    key          bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,  -- [[name, value], …] (text values)
    ticket_ids   jsonb       NOT NULL DEFAULT '[]',  -- the order's or refund's tickets
    amount       bigint      NOT NULL DEFAULT 0,     -- orders: sold; refunds: customer
    queued_at    timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    UNIQUE (kind, entity_id, content_hash)  -- also finds an entity's outputs
);
CREATE INDEX outbox_pending ON reconcile.outbox (id) WHERE sent_at IS NULL;

CREATE TABLE reconcile.reports (
    id         uuid        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    report     bytea       NOT NULL  -- herald.reconcile.v1.ReconciliationReport
);
