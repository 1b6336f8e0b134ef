"""The webhook management API over gRPC, with ingest's catalog and real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_status import rpc_status
from herald.ingest.v1 import ingest_pb2
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from herald.runtime.errors import bad_request_of
from herald.runtime.server import Running, start
from herald.services.webhooks.app import build
from herald.services.webhooks.convert import spec_of
from herald.services.webhooks.secret_box import SecretBox
from herald.services.webhooks.store import Q, WebhookStore
from tests.conftest import Infra
from tests.integration.conftest import IngestUnderTest, start_ingest, webhooks_settings
from tests.integration.test_webhook_delivery import announced, ingest_events

pytestmark = pytest.mark.integration

ACME = (("authorization", "Bearer hk_test_acme_0123456789abcdef"),)
GLOBEX = (("authorization", "Bearer hk_test_globex_0123456789abcdef"),)


@dataclass
class Webhooks:
    running: Running
    stub: webhooks_pb2_grpc.WebhookServiceAsyncStub
    channel: grpc.aio.Channel
    ingest: IngestUnderTest
    database_url: str


@pytest.fixture
async def webhooks(infra: Infra, database_url: str, topic: str) -> AsyncIterator[Webhooks]:
    ingest = await start_ingest(infra, database_url, topic, relay_enabled=False)
    settings = webhooks_settings(database_url, ingest.running.port)
    running = await start(await build(settings, infra.kafka_settings()), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield Webhooks(
        running, webhooks_pb2_grpc.WebhookServiceStub(channel), channel, ingest, database_url
    )
    await channel.close()
    await running.stop(1)
    await ingest.stop()


def katya(**changes: object) -> webhooks_pb2.Webhook:
    """The seed's example subscription."""
    fields: dict[str, object] = {
        "name": "My Webhook",
        "url": "https://myapp.com/webhooks/katya",
        "event_types": ["message.created", "trust.verification.created", "security.alert.created"],
        "retry_policy": webhooks_pb2.RetryPolicy(max_retries=3, backoff_multiplier=2),
    }
    fields.update(changes)
    return webhooks_pb2.Webhook(**fields)  # type: ignore[arg-type]


async def _refusal(call: object, code: grpc.StatusCode) -> list[tuple[str, str]] | None:
    """The (field, description) pairs of the answer ``call`` must fail with, in order;
    None when the answer carries no rich status."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    assert exc.value.code() == code, exc.value.details()
    status = rpc_status.from_call(exc.value)
    return [(v.field, v.description) for v in bad_request_of(status)] if status else None


async def fails(call: object, code: grpc.StatusCode) -> dict[str, str]:
    return dict(await _refusal(call, code) or ())


async def violations(call: object) -> list[str]:
    """The fields an INVALID_ARGUMENT answer names, each time it names one."""
    found = await _refusal(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert found is not None
    return [field for field, _ in found]


async def test_crud_with_secret_shown_on_create_and_on_request_only(webhooks: Webhooks) -> None:
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
    )
    hook = created.webhook
    assert created.secret.startswith("whsec_")
    assert hook.active
    assert hook.retry_policy.initial_delay.seconds == 1
    assert hook.retry_policy.max_delay.seconds == 30
    assert not hook.HasField("last_delivery_time")

    got = await webhooks.stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=hook.id), metadata=ACME)
    assert got.webhook == hook
    assert created.secret not in str(got)
    secret = await webhooks.stub.GetWebhookSecret(
        webhooks_pb2.GetWebhookSecretRequest(id=hook.id), metadata=ACME
    )
    assert secret.secret == created.secret

    # stored encrypted: the secret's bytes are not in the row
    conn = await asyncpg.connect(webhooks.database_url)
    try:
        raw = await conn.fetchval(
            "SELECT secret FROM webhooks.webhooks WHERE id = $1::uuid", hook.id
        )
    finally:
        await conn.close()
    assert created.secret.encode() not in bytes(raw)

    await webhooks.stub.DeleteWebhook(webhooks_pb2.DeleteWebhookRequest(id=hook.id), metadata=ACME)
    await fails(
        webhooks.stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=hook.id), metadata=ACME),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_update_changes_only_the_masked_fields(webhooks: Webhooks) -> None:
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(description="first")), metadata=ACME
        )
    ).webhook
    change = webhooks_pb2.Webhook(
        id=hook.id,
        name="Updated Webhook Name",
        active=False,
        event_types=["analytics.report.completed"],
        description="ignored: not in the mask",
    )
    updated = (
        await webhooks.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=change, update_mask=FieldMask(paths=["name", "active", "event_types"])
            ),
            metadata=ACME,
        )
    ).webhook
    assert updated.name == "Updated Webhook Name"
    assert not updated.active
    assert list(updated.event_types) == ["analytics.report.completed"]
    assert updated.description == "first"
    assert updated.url == hook.url
    assert updated.update_time.ToDatetime() >= hook.update_time.ToDatetime()

    got = await fails(
        webhooks.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=change, update_mask=FieldMask(paths=["secret"])
            ),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "unknown: ['secret']" in got["update_mask"]
    got = await fails(
        webhooks.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(id=hook.id, url="nope"),
                update_mask=FieldMask(paths=["url"]),
            ),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "webhook.url" in got


async def test_pagination_answers_total_limit_offset_and_has_more(webhooks: Webhooks) -> None:
    ids = []
    for i in range(5):
        created = await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(name=f"hook {i}")), metadata=ACME
        )
        ids.append(created.webhook.id)
    seen, token, pages = [], "", 0
    while True:
        page = await webhooks.stub.ListWebhooks(
            webhooks_pb2.ListWebhooksRequest(page_size=2, page_token=token), metadata=ACME
        )
        assert page.total_size == 5
        seen += [w.id for w in page.webhooks]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert pages == 3


async def test_deleting_each_webhook_while_paging_skips_none(webhooks: Webhooks) -> None:
    """A client lists its webhooks page by page and deletes each one it sees, creating
    one more meanwhile: it sees every webhook once. Pages by offset skipped a page's
    worth of webhooks on every page."""
    ids = []
    for i in range(7):
        created = await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(name=f"hook {i}")), metadata=ACME
        )
        ids.append(created.webhook.id)
    seen, totals, token = [], [], ""
    while True:
        page = await webhooks.stub.ListWebhooks(
            webhooks_pb2.ListWebhooksRequest(page_size=2, page_token=token), metadata=ACME
        )
        totals.append(page.total_size)
        for hook in page.webhooks:
            seen.append(hook.id)
            await webhooks.stub.DeleteWebhook(
                webhooks_pb2.DeleteWebhookRequest(id=hook.id), metadata=ACME
            )
        if len(totals) == 2:
            late = await webhooks.stub.CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(webhook=katya(name="late")), metadata=ACME
            )
            ids.append(late.webhook.id)
        token = page.next_page_token
        if not token:
            break
    assert seen == ids, "oldest first, each once, the late one last"
    assert totals == [7, 5, 4, 2], "total_size: the webhooks there are, not those left to page"


async def test_a_webhook_created_after_waiting_for_its_tenant_lists_after_those_before(
    webhooks: Webhooks,
) -> None:
    """created_at, the listing's order, was the transaction's start: a creation waiting
    for its tenant's lock while another committed was stored as older than that one, so
    a client that had paged past the other never saw it."""
    conn = await asyncpg.connect(webhooks.database_url)
    try:
        async with conn.transaction():
            await conn.execute(Q.lock_tenant, "acme")  # as another creation holds it
            waiting = asyncio.ensure_future(
                webhooks.stub.CreateWebhook(
                    webhooks_pb2.CreateWebhookRequest(webhook=katya(name="waited")), metadata=ACME
                )
            )
            await asyncio.sleep(0.5)
            assert not waiting.done()
            released = await conn.fetchval("SELECT clock_timestamp()")
        created = await waiting
    finally:
        await conn.close()
    assert created.webhook.create_time.ToDatetime(UTC) >= released


async def test_tenants_see_only_their_own(webhooks: Webhooks) -> None:
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
        )
    ).webhook
    for call in (
        webhooks.stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=hook.id), metadata=GLOBEX),
        webhooks.stub.GetWebhookSecret(
            webhooks_pb2.GetWebhookSecretRequest(id=hook.id), metadata=GLOBEX
        ),
        webhooks.stub.DeleteWebhook(webhooks_pb2.DeleteWebhookRequest(id=hook.id), metadata=GLOBEX),
        webhooks.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(id=hook.id, name="mine now"),
                update_mask=FieldMask(paths=["name"]),
            ),
            metadata=GLOBEX,
        ),
        webhooks.stub.RotateWebhookSecret(
            webhooks_pb2.RotateWebhookSecretRequest(id=hook.id), metadata=GLOBEX
        ),
    ):
        await fails(call, grpc.StatusCode.NOT_FOUND)
    listed = await webhooks.stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest(), metadata=GLOBEX)
    assert listed.total_size == 0
    still = await webhooks.stub.GetWebhook(
        webhooks_pb2.GetWebhookRequest(id=hook.id), metadata=ACME
    )
    assert still.webhook.name == "My Webhook"

    await fails(
        webhooks.stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await fails(
        webhooks.stub.ListWebhooks(
            webhooks_pb2.ListWebhooksRequest(),
            metadata=(("authorization", "Bearer hk_wrong_0123456789abcdef"),),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_bad_input_is_invalid_argument_with_field_violations(webhooks: Webhooks) -> None:
    bad = katya(
        name="n" * 300,
        url="not a url",
        event_types=["message.created", "nope.created"],
        retry_policy=webhooks_pb2.RetryPolicy(max_retries=-1),
    )
    got = await fails(
        webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=bad, secret="short"), metadata=ACME
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(got) == {
        "webhook.name",
        "webhook.url",
        "webhook.event_types[1]",
        "webhook.retry_policy.max_retries",
        "secret",
    }


async def test_a_whsec_secret_is_refused_unless_its_key_is_16_bytes_of_base64(
    webhooks: Webhooks,
) -> None:
    """``whsec_`` + base64 is a Standard Webhooks secret: its key, not its length, counts."""
    weak = {
        "whsec_................": "base64 after 'whsec_'",  # decoded leniently: an empty key
        "whsec_AAAAAAAAAAAAAAAAAAAA": "at least 16 bytes, not 15",
        "whsec_ABC-_ABC-_ABC-_": "base64 after 'whsec_'",  # URL-safe alphabet
    }
    for secret, why in weak.items():
        got = await fails(
            webhooks.stub.CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(webhook=katya(), secret=secret), metadata=ACME
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert why in got["secret"], (secret, got)
    strong = "whsec_" + base64.b64encode(bytes(range(16))).decode().rstrip("=")
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya(), secret=strong), metadata=ACME
    )
    assert created.secret == strong
    for secret, why in weak.items():
        got = await fails(
            webhooks.stub.RotateWebhookSecret(
                webhooks_pb2.RotateWebhookSecretRequest(id=created.webhook.id, new_secret=secret),
                metadata=ACME,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert why in got["new_secret"], (secret, got)


def _seconds(*values: int) -> list[Duration]:
    return [Duration(seconds=v) for v in values]


async def test_a_fixed_retry_schedule_such_as_bitrix24s_is_stored_and_checked(
    webhooks: Webhooks,
) -> None:
    """Seed 001: Bitrix24's 429/503 are retried 10 s → 30 s → 2 min → 10 min, then DLQ."""
    bitrix = webhooks_pb2.RetryPolicy(delays=_seconds(10, 30, 120, 600))
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya(retry_policy=bitrix)), metadata=ACME
    )
    got = await webhooks.stub.GetWebhook(
        webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=ACME
    )
    policy = got.webhook.retry_policy
    assert [d.seconds for d in policy.delays] == [10, 30, 120, 600]
    assert policy.max_retries == 4, "one retry per delay"
    bad = webhooks_pb2.RetryPolicy(max_retries=2, delays=[*_seconds(10, 0, 90_000), Duration()])
    refused = await fails(
        webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(retry_policy=bad)), metadata=ACME
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(refused) == {
        "webhook.retry_policy.max_retries",
        "webhook.retry_policy.delays[1]",
        "webhook.retry_policy.delays[2]",
        "webhook.retry_policy.delays[3]",
    }
    malformed = webhooks_pb2.RetryPolicy(delays=[Duration(seconds=1, nanos=-5)])
    refused = await fails(
        webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(retry_policy=malformed)),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "webhook.retry_policy.delays[0]" in refused


async def test_the_retried_statuses_are_stored_and_checked(webhooks: Webhooks) -> None:
    policy = webhooks_pb2.RetryPolicy(retry_statuses=[429, 503])
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya(retry_policy=policy)), metadata=ACME
    )
    got = await webhooks.stub.GetWebhook(
        webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=ACME
    )
    assert list(got.webhook.retry_policy.retry_statuses) == [429, 503]
    cleared = await webhooks.stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(id=created.webhook.id),
            update_mask=FieldMask(paths=["retry_policy"]),
        ),
        metadata=ACME,
    )
    assert list(cleared.webhook.retry_policy.retry_statuses) == []
    bad = webhooks_pb2.RetryPolicy(retry_statuses=[503, 200, 410, 503, 600])
    refused = await fails(
        webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(retry_policy=bad)), metadata=ACME
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(refused) == {f"webhook.retry_policy.retry_statuses[{i}]" for i in (1, 2, 3, 4)}


async def test_a_delivery_status_the_enum_does_not_define_is_refused(
    webhooks: Webhooks,
) -> None:
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
        )
    ).webhook
    got = await fails(
        webhooks.stub.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(webhook_id=hook.id, status=99),  # type: ignore[arg-type]
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(got) == {"status"}
    for status in webhooks_pb2.DeliveryStatus.values():
        listed = await webhooks.stub.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(webhook_id=hook.id, status=status), metadata=ACME
        )
        assert listed.total_size == 0


async def test_a_type_registered_a_moment_ago_can_be_subscribed_to(webhooks: Webhooks) -> None:
    await webhooks.stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest(), metadata=ACME)
    await webhooks.stub.CreateWebhook(  # warms the catalog cache
        webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
    )
    await webhooks.ingest.stub.CreateEventType(
        ingest_pb2.CreateEventTypeRequest(
            event_type=ingest_pb2.EventType(
                name="parcel.delivered",
                data_version="1.0",
                json_schema=json.dumps({"type": "object"}),
            )
        )
    )
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya(event_types=["parcel.*"])), metadata=ACME
    )
    assert list(created.webhook.event_types) == ["parcel.*"]


async def test_rotation_returns_a_new_secret_and_the_grace_deadline(webhooks: Webhooks) -> None:
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
    )
    before = datetime.now(UTC)
    rotated = await webhooks.stub.RotateWebhookSecret(
        webhooks_pb2.RotateWebhookSecretRequest(
            id=created.webhook.id, grace_period=Duration(seconds=3600)
        ),
        metadata=ACME,
    )
    assert rotated.secret.startswith("whsec_")
    assert rotated.secret != created.secret
    deadline = rotated.previous_secret_expire_time.ToDatetime(tzinfo=UTC)
    assert before + timedelta(minutes=59) < deadline < before + timedelta(minutes=61)
    current = await webhooks.stub.GetWebhookSecret(
        webhooks_pb2.GetWebhookSecretRequest(id=created.webhook.id), metadata=ACME
    )
    assert current.secret == rotated.secret
    got = await fails(
        webhooks.stub.RotateWebhookSecret(
            webhooks_pb2.RotateWebhookSecretRequest(
                id=created.webhook.id, grace_period=Duration(seconds=30 * 86400)
            ),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "grace_period" in got


async def test_a_header_value_with_a_control_character_is_refused(webhooks: Webhooks) -> None:
    """aiohttp refuses to send it: accepted, every delivery of the webhook failed."""
    got = await fails(
        webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(headers={"X-A": "a\x01b"})),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "control characters" in got["webhook.headers[X-A]"]
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya(headers={"X-A": "a\tb é"})),
            metadata=ACME,
        )
    ).webhook
    for value in ("a\x7fb", "\x1b[0m"):
        got = await fails(
            webhooks.stub.UpdateWebhook(
                webhooks_pb2.UpdateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(id=hook.id, headers={"X-A": value}),
                    update_mask=FieldMask(paths=["headers"]),
                ),
                metadata=ACME,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert set(got) == {"webhook.headers[X-A]"}, repr(value)


async def test_a_url_whose_host_can_never_be_reached_is_refused(webhooks: Webhooks) -> None:
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
        )
    ).webhook
    for url in ("http://exa mple.com/", "http://" + "ä" * 70 + ".com/", "http://xn--a.com/"):
        got = await fails(
            webhooks.stub.CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(webhook=katya(url=url)), metadata=ACME
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert set(got) == {"webhook.url"}, url
        got = await fails(
            webhooks.stub.UpdateWebhook(
                webhooks_pb2.UpdateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(id=hook.id, url=url),
                    update_mask=FieldMask(paths=["url"]),
                ),
                metadata=ACME,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert set(got) == {"webhook.url"}, url
    created = await webhooks.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=katya(url="https://пример.рф/hook")),
        metadata=ACME,
    )
    assert created.webhook.url == "https://пример.рф/hook"


async def test_durations_protobuf_defines_invalid_are_refused(webhooks: Webhooks) -> None:
    """Seconds and nanos of opposite signs (or nanos beyond a second) are no Duration:
    read as a number they had been accepted."""
    mixed = Duration(seconds=1, nanos=-500_000_000)
    got = await fails(
        webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=katya(retry_policy=webhooks_pb2.RetryPolicy(initial_delay=mixed))
            ),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(got) == {"webhook.retry_policy.initial_delay"}
    assert "opposite signs" in got["webhook.retry_policy.initial_delay"]
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
        )
    ).webhook

    def update_max_delay(max_delay: Duration) -> object:
        return webhooks.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    id=hook.id, retry_policy=webhooks_pb2.RetryPolicy(max_delay=max_delay)
                ),
                update_mask=FieldMask(paths=["retry_policy"]),
            ),
            metadata=ACME,
        )

    got = await fails(
        update_max_delay(Duration(seconds=40, nanos=-1)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(got) == {"webhook.retry_policy.max_delay"}
    got_list = await violations(update_max_delay(Duration(seconds=1, nanos=-5)))
    assert got_list == ["webhook.retry_policy.max_delay"]  # once, as malformed
    for grace in (Duration(seconds=1, nanos=-5), Duration(seconds=-1, nanos=5)):
        got = await fails(
            webhooks.stub.RotateWebhookSecret(
                webhooks_pb2.RotateWebhookSecretRequest(id=hook.id, grace_period=grace),
                metadata=ACME,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "opposite signs" in got["grace_period"]
    got = await fails(
        webhooks.stub.RotateWebhookSecret(
            webhooks_pb2.RotateWebhookSecretRequest(
                id=hook.id, grace_period=Duration(seconds=1, nanos=1_000_000_000)
            ),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "nanos" in got["grace_period"]
    secret = await webhooks.stub.GetWebhookSecret(
        webhooks_pb2.GetWebhookSecretRequest(id=hook.id), metadata=ACME
    )
    rotated = await webhooks.stub.RotateWebhookSecret(
        webhooks_pb2.RotateWebhookSecretRequest(
            id=hook.id, grace_period=Duration(nanos=500_000_000)
        ),
        metadata=ACME,
    )
    assert rotated.secret != secret.secret


async def test_stats_up_to_the_earliest_timestamps_start_at_year_one(webhooks: Webhooks) -> None:
    """Without start_time the range is the day before end_time, cut at the beginning of
    year 1 (the earliest Timestamp): a day before it had been an INTERNAL overflow."""
    hook = (
        await webhooks.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
        )
    ).webhook
    earliest = -62135596800  # 0001-01-01T00:00:00Z
    stats = await webhooks.stub.GetDeliveryStats(
        webhooks_pb2.GetDeliveryStatsRequest(
            webhook_id=hook.id, end_time=Timestamp(seconds=earliest + 3600)
        ),
        metadata=ACME,
    )
    assert stats.start_time == Timestamp(seconds=earliest)
    assert stats.end_time == Timestamp(seconds=earliest + 3600)
    assert stats.total == 0
    got = await fails(
        webhooks.stub.GetDeliveryStats(
            webhooks_pb2.GetDeliveryStatsRequest(
                webhook_id=hook.id, end_time=Timestamp(seconds=earliest)
            ),
            metadata=ACME,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(got) == {"end_time"}
    stats = await webhooks.stub.GetDeliveryStats(
        webhooks_pb2.GetDeliveryStatsRequest(
            webhook_id=hook.id,
            start_time=Timestamp(seconds=earliest),
            end_time=Timestamp(seconds=253402300799, nanos=999_999_999),
        ),
        metadata=ACME,
    )
    assert stats.total == 0


async def test_a_secret_older_than_the_rotation_period_is_announced_once_to_its_tenant(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Seed 000: HMAC keys are rotated at least every 90 days (scaled down to 2 s)."""
    ingest = await start_ingest(infra, database_url, topic, relay_enabled=False)
    settings = webhooks_settings(database_url, ingest.running.port, secret_rotation_days=2 / 86400)
    running = await start(await build(settings, infra.kafka_settings()), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = webhooks_pb2_grpc.WebhookServiceStub(channel)
            hook = (
                await stub.CreateWebhook(
                    webhooks_pb2.CreateWebhookRequest(webhook=katya()), metadata=ACME
                )
            ).webhook
            assert hook.secret_create_time == hook.create_time
            [due] = await announced(database_url, "herald.webhook.secret_rotation_due")
            assert due["webhook_id"] == hook.id
            assert due["tenant"] == "acme"
            await asyncio.sleep(1.5)  # a later round announces the same secret again?
            assert len(await ingest_events(database_url, "herald.webhook.secret_rotation_due")) == 1
            await stub.RotateWebhookSecret(
                webhooks_pb2.RotateWebhookSecretRequest(id=hook.id), metadata=ACME
            )
            got = await stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=hook.id), metadata=ACME)
            assert got.webhook.secret_create_time.ToDatetime() > hook.create_time.ToDatetime()
            second = await announced(database_url, "herald.webhook.secret_rotation_due", count=2)
        assert second[1]["secret_created_at"] != due["secret_created_at"]
        tenants = await _alert_tenants(database_url)
        assert tenants == {"acme"}
    finally:
        await running.stop(1)
        await ingest.stop()


async def _alert_tenants(database_url: str) -> set[str]:
    """The heraldtenant attribute of every secret_rotation_due event ingest stored."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT attributes->>'heraldtenant' AS tenant FROM ingest.events "
            "WHERE type = 'herald.webhook.secret_rotation_due'"
        )
    finally:
        await conn.close()
    return {r["tenant"] for r in rows}


async def test_a_tenant_has_at_most_webhooks_max_per_tenant_webhooks(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Every event a webhook takes is one more POST: a tenant with thousands of webhooks
    taking '*' multiplied every event in Herald by thousands, aimed at any public URL."""
    ingest = await start_ingest(infra, database_url, topic, relay_enabled=False)
    settings = webhooks_settings(database_url, ingest.running.port, webhooks_max_per_tenant=3)
    running = await start(await build(settings, infra.kafka_settings()), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = webhooks_pb2_grpc.WebhookServiceStub(channel)
            create = webhooks_pb2.CreateWebhookRequest(webhook=katya())
            made = await asyncio.gather(
                *[stub.CreateWebhook(create, metadata=ACME) for _ in range(5)],
                return_exceptions=True,
            )
            refused = [m for m in made if isinstance(m, grpc.aio.AioRpcError)]
            assert len(refused) == 2, "concurrent creations are counted too"
            assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert "at most 3 webhooks" in (refused[0].details() or "")
            await stub.CreateWebhook(create, metadata=GLOBEX)  # another tenant's own limit
            kept = [m for m in made if isinstance(m, webhooks_pb2.CreateWebhookResponse)]
            await stub.DeleteWebhook(
                webhooks_pb2.DeleteWebhookRequest(id=kept[0].webhook.id), metadata=ACME
            )
            await stub.CreateWebhook(create, metadata=ACME)
    finally:
        await running.stop(1)
        await ingest.stop()


async def test_a_webhook_whose_stored_secret_the_whsec_rule_now_refuses_can_be_updated(
    infra: Infra, database_url: str, topic: str
) -> None:
    """A short ``whsec_`` secret stored before the rule (1236a44 took any 16 characters)
    is kept: an update of other fields and a generated rotation are not refused for it."""
    ingest = await start_ingest(infra, database_url, topic, relay_enabled=False)
    settings = webhooks_settings(database_url, ingest.running.port)
    running = await start(await build(settings, infra.kafka_settings()), "127.0.0.1:0")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        store = WebhookStore(pool, SecretBox(settings.master_key()))
        old = "whsec_................"  # as the earlier release stored it
        stored = await store.create("acme", spec_of(katya()), old)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = webhooks_pb2_grpc.WebhookServiceStub(channel)
            updated = await stub.UpdateWebhook(
                webhooks_pb2.UpdateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(id=stored.id, name="renamed"),
                    update_mask=FieldMask(paths=["name"]),
                ),
                metadata=ACME,
            )
            assert updated.webhook.name == "renamed"
            kept = await stub.GetWebhookSecret(
                webhooks_pb2.GetWebhookSecretRequest(id=stored.id), metadata=ACME
            )
            assert kept.secret == old
            rotated = await stub.RotateWebhookSecret(
                webhooks_pb2.RotateWebhookSecretRequest(id=stored.id), metadata=ACME
            )
            assert rotated.secret.startswith("whsec_")
            assert rotated.secret != old
    finally:
        await pool.close()
        await running.stop(1)
        await ingest.stop()
