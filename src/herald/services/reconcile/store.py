"""The ledger's SQL (sql/queries.sql) and the rows' shapes."""

from __future__ import annotations

from pathlib import Path

from herald.runtime.db import Queries

Q = Queries(Path(__file__).with_name("sql") / "queries.sql")
