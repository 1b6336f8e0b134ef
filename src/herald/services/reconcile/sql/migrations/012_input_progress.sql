-- How far each partition's input records are all taken or dead-lettered: the consumer
-- writes a partition's last offset of a batch once the whole batch is durable (its
-- records are split into transactions of their own, dead letters first, so a batch cut
-- off by a crash may have a higher offset stored and a lower one not). Retention
-- (INPUT_RETENTION_DAYS) purges only coordinates at or below it, so input_horizon never
-- passes a record that was not taken: a replay after the purge still takes that one.
CREATE TABLE reconcile.input_progress (
    topic     text   NOT NULL,
    partition int    NOT NULL,
    "offset"  bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
