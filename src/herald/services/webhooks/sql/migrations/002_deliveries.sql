-- One delivery per (webhook, job); its retries are this row's next_attempt_at.
CREATE TABLE webhooks.deliveries (
    id               uuid        PRIMARY KEY,
    webhook_id       uuid        NOT NULL REFERENCES webhooks.webhooks (id) ON DELETE CASCADE,
    tenant           text        NOT NULL,
    job_id           text        NOT NULL,
    event_id         text        NOT NULL,
    event_type       text        NOT NULL,
    body             bytea       NOT NULL,
    context          jsonb       NOT NULL DEFAULT '{}',
    -- pending: due at next_attempt_at (also the lease of a worker that claimed it);
    -- delivered; failed: retries exhausted (dead-lettered) or the endpoint is gone.
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    claimed_by       text,
    retry_reason     text,
    retry_after      double precision,
    last_status_code integer,
    last_error       text,
    last_response    text,
    last_response_ms integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (webhook_id, job_id)
);
CREATE INDEX deliveries_due ON webhooks.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_webhook ON webhooks.deliveries (webhook_id, created_at);

-- Every attempt, for the delivery log and the response-time statistics.
CREATE TABLE webhooks.attempts (
    delivery_id  uuid        NOT NULL REFERENCES webhooks.deliveries (id) ON DELETE CASCADE,
    number       integer     NOT NULL,
    webhook_id   uuid        NOT NULL,
    started_at   timestamptz NOT NULL,
    status_code  integer,
    error        text,
    response_ms  integer     NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
CREATE INDEX attempts_by_webhook ON webhooks.attempts (webhook_id, started_at);
