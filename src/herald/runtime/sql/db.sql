-- runtime.db's own statements: the migration runner's bookkeeping (which of each
-- service's migrations have been applied; the runner creates the table itself, since no
-- migration can be applied before it exists) and the health check.

-- name: lock
SELECT pg_advisory_lock($1)

-- name: unlock
SELECT pg_advisory_unlock($1)

-- name: create_table
CREATE TABLE IF NOT EXISTS herald_migrations (
    service    text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
)

-- name: applied
SELECT 1 FROM herald_migrations WHERE service = $1 AND version = $2

-- name: record
INSERT INTO herald_migrations (service, version, name) VALUES ($1, $2, $3)

-- name: ping
SELECT 1

-- name: rollback
ROLLBACK
