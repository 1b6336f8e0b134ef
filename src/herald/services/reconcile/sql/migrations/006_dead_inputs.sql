-- Input records sent to the DLQ (Kafka coordinates), stored with their dead letter in
-- the DLQ outbox in one transaction: a replay from the beginning (a new consumer group)
-- dead-letters nothing twice.
CREATE TABLE reconcile.dead_inputs (
    topic     text        NOT NULL,
    partition int         NOT NULL,
    "offset"  bigint      NOT NULL,
    reason    text        NOT NULL,
    dead_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
