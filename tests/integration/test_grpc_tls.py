"""TLS on the gRPC ports, mutual TLS, and the optional caller keys of ingest, dispatch
and reconcile: what a caller sees, against services started in this process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from herald.dispatch.v1 import dispatch_pb2, dispatch_pb2_grpc
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from herald.reconcile.v1 import reconcile_pb2, reconcile_pb2_grpc
from structlog.testing import capture_logs

from herald.devenv import stack
from herald.devenv._stack_services import (
    SERVING,
    UNREACHABLE,
    Service,
    check_health,
    discover,
    probe,
    wait_serving,
    write_pid,
)
from herald.devenv._util import DevEnvError
from herald.runtime.channels import internal_channel
from herald.runtime.errors import Unavailable
from herald.runtime.publisher import Alert, EventPublisher
from herald.runtime.server import Running, start
from herald.services.dispatch.app import build as build_dispatch
from herald.services.dispatch.settings import DispatchSettings
from herald.services.ingest.app import build as build_ingest
from herald.services.ingest.settings import IngestSettings
from herald.services.reconcile.app import build as build_reconcile
from herald.services.webhooks.event_types import EventTypeNames
from tests.conftest import Infra
from tests.fixtures.seeds import LEGACY_EXAMPLES
from tests.integration.reconcile_flow import reconcile_settings
from tests.kafka_helpers import headers, read_topic
from tests.tls_certs import Pki, issue_client_certificate, make_pki

pytestmark = pytest.mark.integration

KEY_A = "ingest-key-a-0123456789"
KEY_B = "ingest-key-b-0123456789"
HEALTH = health_pb2.HealthCheckRequest()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_files(pki: Pki, mutual: bool = False) -> dict[str, Any]:
    """A service's TLS settings, as its fields."""
    return {name.lower(): value for name, value in pki.server_env(mutual).items()}


@contextlib.asynccontextmanager
async def running_ingest(
    infra: Infra, database_url: str, topic: str, **overrides: Any
) -> AsyncIterator[Running]:
    settings = IngestSettings(
        database_url=database_url,
        events_topic=topic,
        ingest_addr="127.0.0.1:0",
        events_topic_partitions=1,
        **overrides,
    )
    running = await start(
        await build_ingest(settings, infra.kafka_settings()),
        "127.0.0.1:0",
        tls=settings.server_tls(),
    )
    try:
        yield running
    finally:
        await running.stop(1)


def event(source: str = "urn:test:tls") -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source,
            "type": "message.created",
            "time": "2026-11-22T10:00:00Z",
            "datacontenttype": "application/json",
            "data": {"id": "m", "content": "c"},
        }
    )


async def publish(
    channel: grpc.aio.Channel, doc: str, *metadata: tuple[str, str]
) -> ingest_pb2.PublishResponse:
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    response: ingest_pb2.PublishResponse = await stub.Publish(
        ingest_pb2.PublishRequest(json=doc), metadata=metadata, timeout=10
    )
    return response


async def health(channel: grpc.aio.Channel) -> int:
    """The service's health once SERVING (its Kafka clients start after the port), or
    after 10 s; raises as the call does."""
    stub = health_pb2_grpc.HealthStub(channel)
    for _ in range(50):
        reply = await stub.Check(HEALTH, timeout=5)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.2)
    return int(reply.status)


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code()


async def actors(database_url: str, key: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT actor FROM ingest.idempotency_keys WHERE key = $1", key)
    finally:
        await conn.close()
    return {r["actor"] for r in rows}


def secure(port: int, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def test_a_tls_port_refuses_plaintext_and_serves_tls(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    async with running_ingest(infra, database_url, topic, **tls_files(pki)) as ingest:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as plain:
            assert await code_of(health(plain)) == grpc.StatusCode.UNAVAILABLE
            assert await code_of(publish(plain, event())) == grpc.StatusCode.UNAVAILABLE
        for host in ("127.0.0.1", "localhost"):  # the certificate names both
            async with grpc.aio.secure_channel(
                f"{host}:{ingest.port}", pki.credentials()
            ) as channel:
                assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
                response = await publish(channel, event())
                assert response.event_id
                assert not response.duplicate


async def test_mutual_tls_needs_a_client_certificate_and_its_identity_scopes_keys(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    async with running_ingest(infra, database_url, topic, **tls_files(pki, mutual=True)) as ingest:
        for credentials in (
            pki.credentials(),  # no certificate
            pki.credentials(pki.stranger_cert, pki.stranger_key),  # another CA's
        ):
            async with secure(ingest.port, credentials) as channel:
                assert await code_of(health(channel)) == grpc.StatusCode.UNAVAILABLE
                assert await code_of(publish(channel, event())) == grpc.StatusCode.UNAVAILABLE

        key = f"order-{uuid.uuid4().hex}"
        a = secure(ingest.port, pki.credentials(pki.client_cert, pki.client_key))
        b = secure(ingest.port, pki.credentials(pki.other_client_cert, pki.other_client_key))
        async with a, b:
            assert await health(a) == health_pb2.HealthCheckResponse.SERVING
            doc = event()
            first = await publish(a, doc, ("idempotency-key", key))
            # The same key and source from another client: its own event, not a repeat
            # (nor a key already used with a different request).
            other = await publish(b, event(), ("idempotency-key", key))
            again = await publish(a, doc, ("idempotency-key", key))
        assert not first.duplicate
        assert not other.duplicate
        assert other.event_id != first.event_id
        assert again.duplicate
        assert again.event_id == first.event_id
        assert await actors(database_url, key) == {"client-a", "client-b"}


async def test_mutual_tls_with_client_names_lets_in_only_those_certificates(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    """Any certificate the CA signed connected: with one CA for every service and
    client, each could call every service. GRPC_TLS_CLIENT_NAMES lets in those named."""
    async with running_ingest(
        infra,
        database_url,
        topic,
        grpc_tls_client_names="client-a, urn:spiffe:unused",
        **tls_files(pki, mutual=True),
    ) as ingest:
        a = secure(ingest.port, pki.credentials(pki.client_cert, pki.client_key))
        b = secure(ingest.port, pki.credentials(pki.other_client_cert, pki.other_client_key))
        async with a, b:
            assert (await publish(a, event())).event_id
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await publish(b, event())
            assert await health(b) == health_pb2.HealthCheckResponse.SERVING, "health: open"
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        "the client certificate (client-b) is not one GRPC_TLS_CLIENT_NAMES lets in"
    )


async def test_client_names_match_a_certificates_subject_alternative_name(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    """A certificate with a subject alternative name (a SPIFFE id) is known by it, not
    by its common name."""
    spiffe = issue_client_certificate(pki, "dispatch", "dispatch-cn", "spiffe://herald/dispatch")
    for names, code in (
        ("spiffe://herald/dispatch", grpc.StatusCode.OK),
        ("dispatch-cn", grpc.StatusCode.PERMISSION_DENIED),
    ):
        async with (
            running_ingest(
                infra,
                database_url,
                topic,
                grpc_tls_client_names=names,
                **tls_files(pki, mutual=True),
            ) as ingest,
            secure(ingest.port, pki.credentials(*spiffe)) as channel,
        ):
            try:
                await publish(channel, event())
                answered = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                answered = exc.code()
        assert answered == code, names


async def test_ingest_with_keys_answers_only_callers_with_one_and_scopes_by_its_name(
    infra: Infra, database_url: str, topic: str
) -> None:
    keys = f"{KEY_A}=publisher-a,{KEY_B}=publisher-b"
    async with (
        running_ingest(infra, database_url, topic, ingest_api_keys=keys) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING, "health is open"
        assert await code_of(publish(channel, event())) == grpc.StatusCode.UNAUTHENTICATED
        wrong = ("authorization", "Bearer not-a-known-key-0123456789")
        assert await code_of(publish(channel, event(), wrong)) == grpc.StatusCode.UNAUTHENTICATED
        listing = ingest_pb2_grpc.IngestServiceStub(channel).ListEventTypes(
            ingest_pb2.ListEventTypesRequest()
        )
        assert await code_of(listing) == grpc.StatusCode.UNAUTHENTICATED

        key = f"order-{uuid.uuid4().hex}"
        by_a = (("authorization", f"Bearer {KEY_A}"), ("idempotency-key", key))
        by_b = (("authorization", f"Bearer {KEY_B}"), ("idempotency-key", key))
        doc = event()
        first = await publish(channel, doc, *by_a)
        other = await publish(channel, event(), *by_b)
        again = await publish(channel, doc, *by_a)
    assert not first.duplicate
    assert not other.duplicate, "another caller's key is not confused with the first's"
    assert other.event_id != first.event_id
    assert again.duplicate
    assert again.event_id == first.event_id
    assert await actors(database_url, key) == {"publisher-a", "publisher-b"}


async def test_a_callers_key_name_scopes_idempotency_keys_before_its_certificate(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    async with running_ingest(
        infra,
        database_url,
        topic,
        ingest_api_keys=f"{KEY_A}=publisher-a",
        **tls_files(pki, mutual=True),
    ) as ingest:
        key = f"order-{uuid.uuid4().hex}"
        async with secure(ingest.port, pki.credentials(pki.client_cert, pki.client_key)) as ch:
            await publish(
                ch, event(), ("authorization", f"Bearer {KEY_A}"), ("idempotency-key", key)
            )
    assert await actors(database_url, key) == {"publisher-a"}


async def test_dispatch_and_reconcile_with_keys_refuse_callers_without_one(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    dispatch_settings = routes_only_dispatch(
        database_url, topic, dispatch_api_keys=f"{KEY_A}=operator", **tls_files(pki)
    )
    reconciling = reconcile_settings(
        database_url,
        1,
        reconcile_api_keys=f"{KEY_B}=operator",
        reconcile_api_key_methods="operator=ListDiscrepancies|GetTicket",
        **tls_files(pki),
    )
    dispatch = await start(
        await build_dispatch(dispatch_settings, infra.kafka_settings()),
        "127.0.0.1:0",
        tls=dispatch_settings.server_tls(),
    )
    reconcile = await start(
        await build_reconcile(reconciling, infra.kafka_settings(), infra.kafka_settings()),
        "127.0.0.1:0",
        tls=reconciling.server_tls(),
    )
    try:
        async with (
            secure(dispatch.port, pki.credentials()) as to_dispatch,
            secure(reconcile.port, pki.credentials()) as to_reconcile,
        ):
            routes = dispatch_pb2_grpc.DispatchServiceStub(to_dispatch).ListRoutes
            found = reconcile_pb2_grpc.ReconcileServiceStub(to_reconcile).ListDiscrepancies
            for channel in (to_dispatch, to_reconcile):
                assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
            assert (
                await code_of(routes(dispatch_pb2.ListRoutesRequest()))
                == grpc.StatusCode.UNAUTHENTICATED
            )
            assert (
                await code_of(found(reconcile_pb2.ListDiscrepanciesRequest()))
                == grpc.StatusCode.UNAUTHENTICATED
            )
            bearer_a = (("authorization", f"Bearer {KEY_A}"),)
            bearer_b = (("authorization", f"Bearer {KEY_B}"),)
            await routes(dispatch_pb2.ListRoutesRequest(), metadata=bearer_a)
            await found(reconcile_pb2.ListDiscrepanciesRequest(), metadata=bearer_b)
            # RECONCILE_API_KEY_METHODS lets the operator list discrepancies only.
            run = reconcile_pb2_grpc.ReconcileServiceStub(to_reconcile).RunReconciliation
            one_event = reconcile_pb2.RunReconciliationRequest(event_id="e1")
            assert (
                await code_of(run(one_event, metadata=bearer_b))
                == grpc.StatusCode.PERMISSION_DENIED
            )
            # Each service knows its own keys only.
            assert (
                await code_of(routes(dispatch_pb2.ListRoutesRequest(), metadata=bearer_b))
                == grpc.StatusCode.UNAUTHENTICATED
            )
    finally:
        await reconcile.stop(1)
        await dispatch.stop(1)


async def test_without_keys_the_limits_hold_for_client_certificate_names(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    """Mutual TLS with GRPC_TLS_CLIENT_NAMES and no API keys: a certificate let in
    could call every method and publish every type. The limits name certificates."""
    async with running_ingest(
        infra,
        database_url,
        topic,
        grpc_tls_client_names="client-a,client-b",
        ingest_api_key_methods="client-a=Publish|PublishBatch",
        ingest_api_key_event_types="client-a=message.*",
        **tls_files(pki, mutual=True),
    ) as ingest:
        a = secure(ingest.port, pki.credentials(pki.client_cert, pki.client_key))
        b = secure(ingest.port, pki.credentials(pki.other_client_cert, pki.other_client_key))
        async with a, b:
            assert (await publish(a, event())).event_id
            with pytest.raises(grpc.aio.AioRpcError) as method:
                await ingest_pb2_grpc.IngestServiceStub(a).ListEventTypes(
                    ingest_pb2.ListEventTypesRequest()
                )
            with pytest.raises(grpc.aio.AioRpcError) as event_type:
                await publish(a, LEGACY_EXAMPLES["user_registered"])
            assert await health(a) == health_pb2.HealthCheckResponse.SERVING, "health: open"
            # client-b is not named: unlimited
            await ingest_pb2_grpc.IngestServiceStub(b).ListEventTypes(
                ingest_pb2.ListEventTypesRequest()
            )
            assert (await publish(b, LEGACY_EXAMPLES["user_registered"])).event_id
    assert method.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert method.value.details() == (
        "caller 'client-a' may not call ListEventTypes (INGEST_API_KEY_METHODS lets it call "
        "Publish, PublishBatch)"
    )
    assert event_type.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "caller 'client-a' may not publish events of type 'user_registered'" in str(
        event_type.value.details()
    )


async def test_dispatch_without_keys_limits_client_certificates_by_method(
    infra: Infra, database_url: str, topic: str, pki: Pki
) -> None:
    settings = routes_only_dispatch(
        database_url,
        topic,
        grpc_tls_client_names="client-a,client-b",
        dispatch_api_key_methods="client-a=ListRoutes|GetRoute",
        **tls_files(pki, mutual=True),
    )
    dispatch = await start(
        await build_dispatch(settings, infra.kafka_settings()),
        "127.0.0.1:0",
        tls=settings.server_tls(),
    )
    try:
        a = secure(dispatch.port, pki.credentials(pki.client_cert, pki.client_key))
        b = secure(dispatch.port, pki.credentials(pki.other_client_cert, pki.other_client_key))
        async with a, b:
            as_a = dispatch_pb2_grpc.DispatchServiceStub(a)
            await as_a.ListRoutes(dispatch_pb2.ListRoutesRequest())
            redrive = dispatch_pb2.RedriveDeadLettersRequest(
                ids=dispatch_pb2.DeadLetterIds(ids=[str(uuid.uuid4())])
            )
            refused = await code_of(as_a.RedriveDeadLetters(redrive))
            taken = await dispatch_pb2_grpc.DispatchServiceStub(b).RedriveDeadLetters(redrive)
    finally:
        await dispatch.stop(1)
    assert refused == grpc.StatusCode.PERMISSION_DENIED
    assert taken.redriven == 0  # client-b is not named: unlimited (no such dead letter)


async def test_reconcile_without_keys_limits_client_certificates_by_method(
    infra: Infra, database_url: str, pki: Pki
) -> None:
    settings = reconcile_settings(
        database_url,
        1,
        grpc_tls_client_names="client-a,client-b",
        reconcile_api_key_methods="client-a=ListDiscrepancies|GetTicket",
        **tls_files(pki, mutual=True),
    )
    reconcile = await start(
        await build_reconcile(settings, infra.kafka_settings(), infra.kafka_settings()),
        "127.0.0.1:0",
        tls=settings.server_tls(),
    )
    try:
        a = secure(reconcile.port, pki.credentials(pki.client_cert, pki.client_key))
        b = secure(reconcile.port, pki.credentials(pki.other_client_cert, pki.other_client_key))
        async with a, b:
            as_a = reconcile_pb2_grpc.ReconcileServiceStub(a)
            await as_a.ListDiscrepancies(reconcile_pb2.ListDiscrepanciesRequest())
            one_event = reconcile_pb2.RunReconciliationRequest(event_id="e1")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await as_a.RunReconciliation(one_event)
            report = await reconcile_pb2_grpc.ReconcileServiceStub(b).RunReconciliation(one_event)
    finally:
        await reconcile.stop(1)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        "caller 'client-a' may not call RunReconciliation (RECONCILE_API_KEY_METHODS lets it "
        "call GetTicket, ListDiscrepancies)"
    )
    assert report.report.id, "client-b is not named: unlimited"


async def test_a_caller_limited_to_some_event_types_is_refused_the_others(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Any caller that could Publish could publish every type: a billing service's key
    could forge Herald's own alerts. A caller named in INGEST_API_KEY_EVENT_TYPES
    publishes only the types its patterns select, refused before anything is checked
    or stored; in a batch, item by item."""
    billing = (("authorization", f"Bearer {KEY_A}"),)
    admin = (("authorization", f"Bearer {KEY_B}"),)
    source = f"urn:test:limits:{uuid.uuid4().hex[:8]}"
    allowed = json.loads(event(source))
    forged = {**json.loads(event(source)), "type": "herald.webhook.disabled", "data": {}}
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=billing,{KEY_B}=admin",
            ingest_api_key_event_types="billing=message.*|user_registered",
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        await publish(channel, json.dumps(allowed), *billing)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await publish(channel, json.dumps(forged), *billing)
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        batch = await stub.PublishBatch(
            ingest_pb2.PublishBatchRequest(
                requests=[
                    ingest_pb2.PublishRequest(json=event(source)),
                    ingest_pb2.PublishRequest(json=json.dumps({**forged, "id": str(uuid.uuid4())})),
                ]
            ),
            metadata=billing,
        )
        by_admin = await publish(channel, json.dumps({**forged, "id": str(uuid.uuid4())}), *admin)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == (
        "caller 'billing' may not publish events of type 'herald.webhook.disabled' "
        "(INGEST_API_KEY_EVENT_TYPES lets it publish message.*, user_registered)"
    )
    first, second = batch.results
    assert first.event_id
    assert first.status.code == grpc.StatusCode.OK.value[0]
    assert not second.event_id
    assert second.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert by_admin.event_id, "a caller not named publishes every type"
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT type FROM ingest.events WHERE source = $1 ORDER BY type", source
        )
    finally:
        await conn.close()
    assert [r["type"] for r in stored] == [
        "herald.webhook.disabled",  # admin's
        "message.created",
        "message.created",
    ]


async def test_an_event_type_limit_holds_for_the_legacy_envelope_and_for_retries(
    infra: Infra, database_url: str, topic: str
) -> None:
    """The legacy envelope names its type event_type; and a retry (same idempotency
    key) of an event the caller published before it was limited is refused, not
    answered as a duplicate of the earlier, accepted one."""
    caller = ("authorization", f"Bearer {KEY_A}")
    legacy = LEGACY_EXAMPLES["user_registered"]
    retried = event()
    key = ("idempotency-key", f"k-{uuid.uuid4().hex}")
    async with (
        running_ingest(infra, database_url, topic, ingest_api_keys=f"{KEY_A}=billing") as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        earlier = await publish(channel, retried, caller, key)
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=billing",
            ingest_api_key_event_types="billing=integration.*",
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        refused_legacy = await code_of(publish(channel, legacy, caller))
        refused_retry = await code_of(publish(channel, retried, caller, key))
    assert earlier.event_id
    assert refused_legacy == grpc.StatusCode.PERMISSION_DENIED
    assert refused_retry == grpc.StatusCode.PERMISSION_DENIED


async def test_a_caller_limited_to_some_sources_is_refused_the_others(
    infra: Infra, database_url: str, topic: str
) -> None:
    """A caller that may publish a type could publish it from any source: billing's
    key could send message.created as urn:herald:dispatch. A caller named in
    INGEST_API_KEY_SOURCES publishes only from the sources its patterns select, in every
    envelope, item by item in a batch; a caller not named from any."""
    billing = (("authorization", f"Bearer {KEY_A}"),)
    admin = (("authorization", f"Bearer {KEY_B}"),)
    run = uuid.uuid4().hex[:8]
    own, other = f"urn:test:billing:{run}:invoices", f"urn:test:other:{run}"
    legacy = json.loads(LEGACY_EXAMPLES["user_registered"])
    legacy_forged = json.dumps({**legacy, "event_id": str(uuid.uuid4()), "source": other})
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=billing,{KEY_B}=admin",
            ingest_api_key_sources=f"billing=urn:test:billing:{run}:*|urn:test:exact:{run}",
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        await publish(channel, event(own), *billing)
        await publish(channel, event(f"urn:test:exact:{run}"), *billing)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await publish(channel, event(other), *billing)
        refused_prefix = await code_of(publish(channel, event(f"urn:test:billing:{run}"), *billing))
        refused_legacy = await code_of(publish(channel, legacy_forged, *billing))
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        batch = await stub.PublishBatch(
            ingest_pb2.PublishBatchRequest(
                requests=[
                    ingest_pb2.PublishRequest(json=event(other)),
                    ingest_pb2.PublishRequest(json=event(own)),
                ]
            ),
            metadata=billing,
        )
        await publish(channel, event(other), *admin)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == (
        f"caller 'billing' may not publish events from source '{other}' (INGEST_API_KEY_SOURCES "
        f"lets it publish from urn:test:billing:{run}:*, urn:test:exact:{run})"
    )
    assert refused_prefix == grpc.StatusCode.PERMISSION_DENIED, "the prefix is not in itself"
    assert refused_legacy == grpc.StatusCode.PERMISSION_DENIED
    first, second = batch.results
    assert (first.event_id, first.status.code) == ("", grpc.StatusCode.PERMISSION_DENIED.value[0])
    assert second.event_id
    assert second.status.code == grpc.StatusCode.OK.value[0]
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT source, count(*) AS n FROM ingest.events WHERE source LIKE $1"
            " GROUP BY source ORDER BY source",
            f"urn:test:%{run}%",
        )
    finally:
        await conn.close()
    assert [(r["source"], r["n"]) for r in stored] == [
        (own, 2),
        (f"urn:test:exact:{run}", 1),
        (other, 1),  # admin's
    ]


async def test_a_caller_limited_to_some_application_ids_is_refused_the_others(
    infra: Infra, database_url: str, topic: str
) -> None:
    """The record's application-id header is the call's metadata (else the event's
    source): any caller could name itself another system. A caller named in
    INGEST_API_KEY_APPLICATION_IDS publishes only under the ids its patterns select,
    sent as metadata or, without it, as the source."""
    billing = ("authorization", f"Bearer {KEY_A}")
    admin = ("authorization", f"Bearer {KEY_B}")
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=billing,{KEY_B}=admin",
            ingest_api_key_application_ids="billing=billing|billing-*|urn:test:billing:*",
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        await publish(channel, event("urn:test:one"), billing, ("application-id", "billing-eu"))
        await publish(channel, event("urn:test:billing:two"), billing)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await publish(channel, event("urn:test:no"), billing, ("application-id", "payments"))
        # Without the metadata the source is the record's application-id.
        unsent = await code_of(publish(channel, event("payments"), billing))
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        batch = await stub.PublishBatch(
            ingest_pb2.PublishBatchRequest(requests=[ingest_pb2.PublishRequest(json=event())]),
            metadata=(billing, ("application-id", "payments")),
        )
        await publish(channel, event("urn:test:three"), admin, ("application-id", "payments"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == (
        "caller 'billing' may not publish as application-id 'payments' "
        "(INGEST_API_KEY_APPLICATION_IDS lets it publish as billing, billing-*, "
        "urn:test:billing:*)"
    )
    assert unsent == grpc.StatusCode.PERMISSION_DENIED
    [refused] = batch.results
    assert refused.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    records = await read_topic(infra.kafka_settings(), topic, 3)
    assert sorted((headers(r)["ce_source"], headers(r)["application-id"]) for r in records) == [
        ("urn:test:billing:two", "urn:test:billing:two"),
        ("urn:test:one", "billing-eu"),
        ("urn:test:three", "payments"),  # admin is not limited
    ]


async def test_a_start_names_event_type_patterns_that_select_no_registered_type(
    infra: Infra, database_url: str, topic: str
) -> None:
    """A misspelt type is well formed, so not refused, but its caller would be refused
    the type it meant: the start says which patterns select nothing."""
    with capture_logs() as logs:
        async with running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=billing",
            ingest_api_key_event_types="billing=message.*|user_registred",
        ):
            pass
    [line] = [e for e in logs if e["event"] == "type_limits.unmatched"]
    assert line["log_level"] == "warning"
    assert line["patterns"] == {"billing": ["user_registred"]}


def routes_only_dispatch(database_url: str, topic: str, **overrides: Any) -> DispatchSettings:
    """A dispatch of routes only (no webhooks) on its own topics, at a port of its own."""
    suffix = uuid.uuid4().hex[:10]
    return DispatchSettings(
        database_url=database_url,
        dispatch_addr="127.0.0.1:0",
        events_topic=topic,
        dispatch_group=f"d{suffix}",
        deliveries_topic=f"herald.deliveries.d{suffix}",
        dlq_topic=f"herald.dlq.d{suffix}",
        notification_channels="email",
        webhooks_fanout=False,
        builtin_routes=False,
        **overrides,
    )


async def test_a_caller_limited_to_some_methods_is_refused_the_others(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Any key opened every method: a publishing service's key could add event types
    or, in dispatch, redrive every dead letter. A caller named in *_API_KEY_METHODS
    calls only the methods it lists; the other callers, every method."""
    publisher = (("authorization", f"Bearer {KEY_A}"),)
    admin = (("authorization", f"Bearer {KEY_B}"),)
    new_type = ingest_pb2.CreateEventTypeRequest(
        event_type=ingest_pb2.EventType(
            name=f"test.scoped.{uuid.uuid4().hex[:8]}", data_version="1.0", json_schema="{}"
        )
    )
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=publisher,{KEY_B}=admin",
            ingest_api_key_methods="publisher=Publish|PublishBatch",
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING, "health is open"
        published = await publish(channel, event(), *publisher)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateEventType(new_type, metadata=publisher)
        listing = stub.ListEventTypes(ingest_pb2.ListEventTypesRequest(), metadata=publisher)
        assert await code_of(listing) == grpc.StatusCode.PERMISSION_DENIED
        wanted = ingest_pb2.GetEventTypeRequest(name=new_type.event_type.name)
        assert await code_of(stub.GetEventType(wanted, metadata=admin)) == (
            grpc.StatusCode.NOT_FOUND
        ), "the refused call created nothing"
        await stub.CreateEventType(new_type, metadata=admin)  # admin is not limited
        await publish(channel, event(), *admin)
    assert published.event_id
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == (
        "caller 'publisher' may not call CreateEventType "
        "(INGEST_API_KEY_METHODS lets it call Publish, PublishBatch)"
    )

    settings = routes_only_dispatch(
        database_url,
        topic,
        dispatch_api_keys=f"{KEY_A}=viewer,{KEY_B}=operator",
        dispatch_api_key_methods="viewer=ListDeadLetters|ListRoutes",
    )
    dispatch = await start(await build_dispatch(settings, infra.kafka_settings()), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{dispatch.port}") as channel:
            to_dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
            listed = to_dispatch.ListDeadLetters
            await listed(dispatch_pb2.ListDeadLettersRequest(), metadata=publisher)
            redrive = dispatch_pb2.RedriveDeadLettersRequest(
                filter=dispatch_pb2.DeadLetterFilter(event_type=f"none.{uuid.uuid4().hex}")
            )
            assert (
                await code_of(to_dispatch.RedriveDeadLetters(redrive, metadata=publisher))
                == grpc.StatusCode.PERMISSION_DENIED
            )
            redriven = await to_dispatch.RedriveDeadLetters(redrive, metadata=admin)
    finally:
        await dispatch.stop(1)
    assert redriven.ByteSize() == 0, "the operator may redrive (none matched)"


async def test_the_stack_health_probe_speaks_tls_when_the_services_do(
    infra: Infra, database_url: str, topic: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_ingest(infra, database_url, topic, **tls_files(pki, mutual=True)) as ingest:
        async with secure(ingest.port, pki.credentials(pki.client_cert, pki.client_key)) as ch:
            await health(ch)  # SERVING by now
        address = f"127.0.0.1:{ingest.port}"
        assert await asyncio.to_thread(probe, address) == UNREACHABLE, "no TLS settings"
        for name, value in pki.server_env(mutual=True).items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(probe, address) == SERVING


async def test_the_stack_says_why_a_tls_port_it_cannot_probe_is_unreachable(
    infra: Infra, database_url: str, topic: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make up` / `make status` with TLS settings the services' ports do not take (a
    mutual-TLS port, and no client certificate here): the service runs and is SERVING,
    and the stack says what is wrong rather than only "unreachable"."""
    async with running_ingest(infra, database_url, topic, **tls_files(pki, mutual=True)) as ingest:
        address = f"127.0.0.1:{ingest.port}"
        health, why = await asyncio.to_thread(check_health, address)
        assert (health, why) == (
            UNREACHABLE,
            "the port closed the connection: a TLS port? (GRPC_TLS_CERT_FILE is not set here)",
        )
        for name, value in pki.server_env(mutual=False).items():
            monkeypatch.setenv(name, value)
        health, why = await asyncio.to_thread(check_health, address)
        assert health == UNREACHABLE
        assert "mutual TLS? (GRPC_TLS_CLIENT_CERT_FILE is not set here)" in why
        service = Service("ingest", address, "127.0.0.1:1")
        failure = await asyncio.to_thread(wait_serving, [service], lambda _: None, 1.0)
        assert failure is not None
        assert "GRPC_TLS_CLIENT_CERT_FILE is not set here" in failure.reason
        monkeypatch.setenv("GRPC_TLS_CA_FILE", str(pki.stranger_cert))  # not the CA
        monkeypatch.delenv("GRPC_TLS_CLIENT_CERT_FILE", raising=False)
        _health, why = await asyncio.to_thread(check_health, address)
        assert why.startswith("TLS handshake failed: "), why
    assert await asyncio.to_thread(check_health, address) == (UNREACHABLE, ""), "none listens"


async def test_webhooks_logs_why_it_cannot_read_the_catalog_of_an_ingest_with_keys(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Without INGEST_CLIENT_KEY, CreateWebhook answers UNAVAILABLE (the tenant can do
    nothing about it): the operator reads why in webhooks' log."""
    async with running_ingest(
        infra, database_url, topic, ingest_api_keys=f"{KEY_A}=herald"
    ) as ingest:
        target = f"127.0.0.1:{ingest.port}"
        async with internal_channel(target) as keyless:
            with capture_logs() as logs, pytest.raises(Unavailable, match="UNAUTHENTICATED"):
                await EventTypeNames(keyless, ttl=0).names()
        [line] = [e for e in logs if e["event"] == "event_types.unavailable"]
        assert line["log_level"] == "warning"
        assert line["code"] == "UNAUTHENTICATED"
        assert "INGEST_CLIENT_KEY" in line["hint"]
        assert KEY_A not in str(line)
        async with internal_channel(target, key=KEY_A) as keyed:
            assert "message.created" in await EventTypeNames(keyed, ttl=0).names()


async def test_make_up_leaves_a_running_tls_service_it_cannot_talk_to_alone(
    infra: Infra,
    database_url: str,
    topic: str,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`make up` in a shell without the GRPC_TLS_* settings a running stack was started
    with: before, it called the services "not answering" and restarted them in
    plaintext; now it stops, saying why, and they keep running as they were."""
    async with running_ingest(infra, database_url, topic, **tls_files(pki, mutual=True)) as ingest:
        monkeypatch.setenv("HERALD_LOCAL_DIR", str(tmp_path))
        monkeypatch.setenv("INGEST_ADDR", f"127.0.0.1:{ingest.port}")
        # The test's servers, not a PostgreSQL and a Kafka of the stack's own in tmp_path.
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.bootstrap_servers)
        for name in pki.server_env(mutual=True):
            monkeypatch.delenv(name, raising=False)
        # Stands for the ingest process the stack started (its command line names it).
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)", "herald.services.ingest"
        )
        try:
            service = next(s for s in discover() if s.name == "ingest")
            write_pid(tmp_path, service, holder.pid)
            with pytest.raises(DevEnvError) as exc:
                await asyncio.to_thread(stack.up, tmp_path, 5.0)
            assert "ingest (pid" in str(exc.value)
            assert "cannot talk to it: the port closed the connection" in str(exc.value)
            assert "GRPC_TLS_CERT_FILE is not set here" in str(exc.value)
            assert holder.returncode is None, "not stopped"
        finally:
            with contextlib.suppress(ProcessLookupError):  # the old `up` killed it
                holder.kill()
            await holder.wait()


async def test_a_base64_key_with_padding_opens_ingest(
    infra: Infra, database_url: str, topic: str
) -> None:
    """`openssl rand -base64 32` ends in "=": KEY=NAME then holds "==". Split at the
    first "=", ingest took a shorter key that no caller sends, and refused the real one."""
    key = base64.b64encode(bytes(range(32))).decode()
    assert key.endswith("=")
    async with (
        running_ingest(infra, database_url, topic, ingest_api_keys=f"{key}=padded") as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        doc = event()
        response = await publish(channel, doc, ("authorization", f"Bearer {key}"))
        assert response.event_id == json.loads(doc)["id"]
        stripped = ("authorization", f"Bearer {key.rstrip('=')}")
        assert await code_of(publish(channel, event(), stripped)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


@pytest.mark.parametrize(
    ("key", "limits", "code", "hint"),
    [
        # dispatch, webhooks and reconcile without INGEST_CLIENT_KEY
        ("", {}, grpc.StatusCode.UNAUTHENTICATED, "set INGEST_CLIENT_KEY"),
        # Herald's own caller limited to other methods
        (
            KEY_A,
            {"ingest_api_key_methods": "herald=ListEventTypes"},
            grpc.StatusCode.PERMISSION_DENIED,
            "INGEST_API_KEY_METHODS",
        ),
        # or to other event types (reconcile's integration.* only, say)
        (
            KEY_A,
            {"ingest_api_key_event_types": "herald=integration.*"},
            grpc.StatusCode.PERMISSION_DENIED,
            "INGEST_API_KEY_EVENT_TYPES",
        ),
        # or to other sources
        (
            KEY_A,
            {"ingest_api_key_sources": "herald=urn:herald:*"},
            grpc.StatusCode.PERMISSION_DENIED,
            "INGEST_API_KEY_SOURCES",
        ),
    ],
)
async def test_an_alert_ingest_refuses_is_logged_with_what_to_set(
    infra: Infra,
    database_url: str,
    topic: str,
    key: str,
    limits: dict[str, str],
    code: grpc.StatusCode,
    hint: str,
) -> None:
    """Each try of an alert ingest refuses is logged (it is kept and retried), naming
    the setting to look at."""
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{KEY_A}=herald",
            **limits,
        ) as ingest,
        internal_channel(f"127.0.0.1:{ingest.port}", key=key) as channel,
    ):
        alert = Alert("herald.webhook.disabled", "k1", "webhooks/w1", {"webhook_id": "w1"})
        with capture_logs() as logs:
            error = await EventPublisher(channel, "urn:test").publish_once(alert)
    assert error is not None
    assert error.code() == code
    [line] = [e for e in logs if e["event"] == "publish.failed"]
    assert line["code"] == code.name
    assert hint in line["hint"]
