"""Stored alerts and their publishing loop (the database and ingest are fakes here; the
real ones are in tests/integration/test_webhook_delivery.py and test_dispatch.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest

from herald.runtime.announcements import Announcements, _storable
from herald.runtime.publisher import Alert


class FakePool:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        return self.rows

    async def execute(self, query: str, *args: Any) -> str:
        verb = query.split(maxsplit=1)[0]
        self.executed.append((verb, args))
        return verb


class Error(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class FakePublisher:
    def __init__(self, answers: dict[str, grpc.StatusCode]) -> None:
        self.answers = answers
        self.tried: list[str] = []

    async def publish_once(self, alert: Alert) -> Error | None:
        self.tried.append(alert.key)
        code = self.answers.get(alert.key)
        return None if code is None else Error(code)


def row(key: str) -> dict[str, Any]:
    return {
        "event_type": "herald.webhook.disabled",
        "key": key,
        "subject": "webhooks/w1",
        "data": '{"reason": "gone"}',
        "dataschema": "",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "tenant": "",
        "traceparent": "",
    }


async def test_a_refused_alert_is_set_aside_and_the_rest_go_on() -> None:
    pool = FakePool([row("a"), row("b"), row("c")])
    publisher = FakePublisher({"b": grpc.StatusCode.INVALID_ARGUMENT})
    announcements = Announcements(pool, publisher, "webhooks")  # type: ignore[arg-type]
    assert await announcements.publish_stored() == (2, False)
    assert publisher.tried == ["a", "b", "c"]
    assert [(verb, args[1]) for verb, args in pool.executed] == [
        ("DELETE", "a"),
        ("UPDATE", "b"),
        ("DELETE", "c"),
    ]


async def test_while_ingest_is_away_the_round_stops_and_nothing_is_deleted() -> None:
    pool = FakePool([row("a"), row("b")])
    publisher = FakePublisher({"a": grpc.StatusCode.UNAVAILABLE})
    announcements = Announcements(pool, publisher, "webhooks")  # type: ignore[arg-type]
    assert await announcements.publish_stored() == (0, True)
    assert publisher.tried == ["a"]
    assert pool.executed == []


def test_text_postgresql_cannot_store_is_replaced() -> None:
    assert _storable({"id": "e\x00vil", "types": ["a\ud800"], "n": 3}) == {
        "id": "e\ufffdvil",
        "types": ["a\ufffd\ufffd\ufffd"],
        "n": 3,
    }


def test_the_schema_is_a_plain_name() -> None:
    with pytest.raises(ValueError, match="not a schema name"):
        Announcements(FakePool([]), FakePublisher({}), "x; DROP TABLE y")  # type: ignore[arg-type]
