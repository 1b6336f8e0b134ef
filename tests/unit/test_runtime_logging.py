"""Log lines: one JSON object per line, whatever the values logged."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from herald.runtime.logging import configure_logging


@pytest.fixture
def lines() -> Iterator[io.BytesIO]:
    """JSON logging into a buffer; the default configuration again afterwards."""
    raw = io.BytesIO()
    configure_logging("INFO", "json", service="test", stream=io.TextIOWrapper(raw))
    yield raw
    structlog.reset_defaults()


def test_a_line_is_one_json_object_with_service_level_and_time(lines: io.BytesIO) -> None:
    log = structlog.get_logger("t")
    delivery = uuid.uuid4()
    log.info(
        "delivery.attempted",
        delivery_id=delivery,
        at=datetime(2026, 11, 23, 4, 0, tzinfo=UTC),
        by_code={200: 3},  # not a str key
        note="naïve",
    )
    log.debug("not at INFO")
    log.info("counted", huge=2**70)  # beyond 64 bits: this line is rendered by json
    first, second = lines.getvalue().decode().splitlines()
    entry = json.loads(first)
    assert entry["event"] == "delivery.attempted"
    assert entry["service"] == "test"
    assert entry["level"] == "info"
    stamped = datetime.strptime(entry["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 5
    assert entry["delivery_id"] == str(delivery)
    assert entry["note"] == "naïve"
    assert entry["at"] == "2026-11-23T04:00:00+00:00"
    assert entry["by_code"] == {"200": 3}
    assert json.loads(second)["huge"] == 2**70


def test_a_library_exception_is_logged_with_its_traceback() -> None:
    """asyncpg, aiokafka and grpc log through the standard library: their exc_info was
    rendered as the repr of a traceback object, the traceback lost."""
    import logging  # noqa: PLC0415

    out = io.StringIO()  # no buffer: library lines go through the stdlib handler
    configure_logging("INFO", "json", service="test", stream=out)
    try:
        try:
            raise ConnectionResetError("the server went away")
        except ConnectionResetError:
            logging.getLogger("asyncpg.pool").exception("Failed to restore the pool")
    finally:
        structlog.reset_defaults()
    entry = json.loads(out.getvalue().splitlines()[-1])
    assert entry["event"] == "Failed to restore the pool"
    assert "Traceback (most recent call last)" in entry["exception"]
    assert "ConnectionResetError: the server went away" in entry["exception"]


def test_an_exception_and_a_stack_are_rendered_as_text(lines: io.BytesIO) -> None:
    log = structlog.get_logger("t")
    try:
        raise KeyError("gone")
    except KeyError:
        log.exception("failed", at="here")
    log.warning("where", stack_info=True)
    log.error("explicit", exc_info=ValueError("bad"))
    failed, where, explicit = (json.loads(x) for x in lines.getvalue().decode().splitlines())
    assert failed["level"] == "error"
    assert "KeyError: 'gone'" in failed["exception"]
    assert where["level"] == "warning"
    assert "test_an_exception_and_a_stack_are_rendered_as_text" in where["stack"]
    assert "ValueError: bad" in explicit["exception"]


def test_aiokafka_connect_failures_are_silenced_but_their_reason_is_kept() -> None:
    """aiokafka logs a failed connect at ERROR each attempt (noise): the line is not
    written, but its reason (wrong credentials, say) is kept for kafka.unreachable."""
    import logging  # noqa: PLC0415
    import time  # noqa: PLC0415

    from herald.runtime.kafka import connect_reasons  # noqa: PLC0415

    out = io.StringIO()
    configure_logging("INFO", "json", service="test", stream=out)
    try:
        before = time.time()
        aiokafka = logging.getLogger("aiokafka")
        aiokafka.error(
            'Unable connect to "%s:%s": %s',
            "127.0.0.1",
            19094,
            "[Error 58] SaslAuthFailed",
        )
        logging.getLogger("aiokafka.conn").error("a reconnect failed")
        aiokafka.critical("kept")
    finally:
        structlog.reset_defaults()
    written = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert written == ["kept"]
    assert connect_reasons.since(before) == (
        'Unable connect to "127.0.0.1:19094": [Error 58] SaslAuthFailed'
    )
    assert connect_reasons.since(time.time() + 1) is None  # nothing since then
