-- The webhooks service owns subscriptions and their (encrypted) secrets.
CREATE SCHEMA IF NOT EXISTS webhooks;

CREATE TABLE webhooks.webhooks (
    id                         uuid        PRIMARY KEY,
    tenant                     text        NOT NULL,
    name                       text        NOT NULL,
    url                        text        NOT NULL,
    event_types                text[]      NOT NULL,
    active                     boolean     NOT NULL,
    max_retries                integer     NOT NULL,
    initial_delay_ms           bigint      NOT NULL,
    backoff_multiplier         double precision NOT NULL,
    max_delay_ms               bigint      NOT NULL,
    rate_per_second            integer     NOT NULL DEFAULT 0,
    rate_per_minute            integer     NOT NULL DEFAULT 0,
    headers                    jsonb       NOT NULL DEFAULT '{}',
    description                text        NOT NULL DEFAULT '',
    metadata                   jsonb       NOT NULL DEFAULT '{}',
    -- AES-256-GCM: nonce || ciphertext, the webhook id as associated data.
    secret                     bytea       NOT NULL,
    previous_secret            bytea,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    last_delivery_at           timestamptz
);
CREATE INDEX webhooks_by_tenant ON webhooks.webhooks (tenant, created_at, id);
