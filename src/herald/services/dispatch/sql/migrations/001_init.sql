CREATE SCHEMA IF NOT EXISTS dispatch;

-- Rules from events to NotificationJobs (filter and target in their proto JSON form).
CREATE TABLE dispatch.routes (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    description text        NOT NULL DEFAULT '',
    filter      jsonb       NOT NULL,
    target      jsonb       NOT NULL,
    disabled    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Events whose fan-out failed for some targets, waiting for their next try. The id is
-- derived from where the record was read, so a record consumed twice is parked once.
CREATE TABLE dispatch.retries (
    id              uuid        PRIMARY KEY,
    topic           text        NOT NULL,
    partition       int         NOT NULL,
    "offset"        bigint      NOT NULL,
    key             bytea,
    value           bytea,
    header_names    text[]      NOT NULL,
    header_values   bytea[]     NOT NULL,
    event_id        text        NOT NULL,
    event_source    text        NOT NULL,
    event_type      text        NOT NULL,
    targets         text[]      NOT NULL,  -- still owed: webhooks, route:<id>
    attempts        int         NOT NULL,  -- tries so far (the first one included)
    reason          text        NOT NULL,  -- why the last try failed
    next_attempt_at timestamptz NOT NULL,
    claimed_by      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retries_due ON dispatch.retries (next_attempt_at);

-- Events given up on (retries exhausted, undecodable, or data a route cannot use).
CREATE TABLE dispatch.dead_letters (
    id            uuid        PRIMARY KEY,
    topic         text        NOT NULL,
    partition     int         NOT NULL,
    "offset"      bigint      NOT NULL,
    key           bytea,
    value         bytea,
    header_names  text[]      NOT NULL,
    header_values bytea[]     NOT NULL,
    event_id      text        NOT NULL DEFAULT '',
    event_source  text        NOT NULL DEFAULT '',
    event_type    text        NOT NULL DEFAULT '',
    targets       text[]      NOT NULL,
    attempts      int         NOT NULL,
    reason        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    redriven_at   timestamptz
);
CREATE INDEX dead_letters_by_time ON dispatch.dead_letters (created_at DESC, id);
