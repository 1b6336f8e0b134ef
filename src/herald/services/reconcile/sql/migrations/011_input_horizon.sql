-- Retention of the inputs' coordinates (INPUT_RETENTION_DAYS): per partition, every
-- record at or below "offset" was taken or dead-lettered, and its row in inputs or
-- dead_inputs may be gone. A replay skips those records as it skips a row's, so a
-- purge never makes a replay apply or dead-letter anything again; purged_before is the
-- latest horizon a purge deleted rows under (reports say their input totals miss what
-- came before it).
CREATE TABLE reconcile.input_horizon (
    topic         text        NOT NULL,
    partition     int         NOT NULL,
    "offset"      bigint      NOT NULL,
    purged_before timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE INDEX dead_inputs_dead_at ON reconcile.dead_inputs (dead_at);
CREATE INDEX reports_created ON reconcile.reports (created_at);
