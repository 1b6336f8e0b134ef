-- Dead-letter records stored in the same transaction as the dead letter, then sent to
-- the DLQ topic until Kafka takes each (runtime/dlq_outbox.py): one decided while Kafka
-- is away, or just before a stop or a crash, is not lost.
CREATE TABLE {schema}.dlq_outbox (
    id            bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    key           bytea,
    value         bytea,
    header_names  text[]      NOT NULL,
    header_values bytea[]     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
