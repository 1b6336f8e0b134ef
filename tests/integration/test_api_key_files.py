"""Keys from a file (*_API_KEYS_FILE), changed while the service runs: a rotated or
revoked key takes effect with no restart, and a bad version of the file changes
nothing. Against ingest and webhooks started in this process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from herald.dispatch.v1 import dispatch_pb2, dispatch_pb2_grpc
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from herald.reconcile.v1 import reconcile_pb2, reconcile_pb2_grpc
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from structlog.testing import capture_logs

from herald.runtime.server import start
from herald.services.dispatch.app import build as build_dispatch
from herald.services.reconcile.app import build as build_reconcile
from herald.services.webhooks.app import build as build_webhooks
from tests.conftest import Infra
from tests.integration.conftest import INTERNAL_KEY, start_ingest, webhooks_settings
from tests.integration.reconcile_flow import reconcile_settings
from tests.integration.test_grpc_tls import event, routes_only_dispatch, running_ingest

pytestmark = pytest.mark.integration

OLD = "old-key-0123456789abcdef"
NEW = "new-key-0123456789abcdef"
LATE = "late-key-0123456789abcdef"
POLL = 0.05


def replace(path: Path, text: str) -> None:
    """Writes the file as deployments should: a new file renamed over the old one."""
    part = path.with_suffix(".part")
    part.write_text(text)
    os.replace(part, path)


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def code_after(call: Callable[[], Awaitable[object]]) -> grpc.StatusCode:
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def until(call: Callable[[], Awaitable[object]], code: grpc.StatusCode) -> float:
    """Seconds until ``call`` answers ``code`` (fails after 5 s)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while (found := await code_after(call)) != code:
        assert loop.time() - began < 5, f"still {found.name} after 5 s"
        await asyncio.sleep(POLL / 2)
    return loop.time() - began


def publisher(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub,
) -> Callable[[str], Callable[[], Awaitable[object]]]:
    """key -> a Publish call with that key (of an event of its own each time)."""

    def publish(key: str) -> Callable[[], Awaitable[object]]:
        return lambda: stub.Publish(
            ingest_pb2.PublishRequest(json=event()), metadata=bearer(key), timeout=10
        )

    return publish


async def test_ingest_takes_a_rotated_key_and_drops_a_revoked_one_without_a_restart(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    keys = tmp_path / "ingest-keys"
    keys.write_text(f"# billing's key\n{OLD}=billing\n")
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys_file=str(keys),
            ingest_api_key_methods="billing=Publish,*=ListEventTypes",
            api_keys_file_poll_seconds=POLL,
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        publish = publisher(stub)

        def list_types(key: str) -> Callable[[], Awaitable[object]]:
            request = ingest_pb2.ListEventTypesRequest()
            return lambda: stub.ListEventTypes(request, metadata=bearer(key), timeout=10)

        assert await code_after(publish(OLD)) == grpc.StatusCode.OK
        assert await code_after(publish(NEW)) == grpc.StatusCode.UNAUTHENTICATED
        # Rotation: both keys for a while, then the old one revoked.
        with capture_logs() as logs:
            replace(keys, f"{OLD}=billing,{NEW}=billing")
            await until(publish(NEW), grpc.StatusCode.OK)
        [line] = [e for e in logs if e["event"] == "api_keys.reloaded"]
        assert (line["variable"], line["keys"]) == ("INGEST_API_KEYS_FILE", 2)
        assert line["callers_changed"] == ["billing"]
        assert OLD not in str(logs)
        assert NEW not in str(logs)
        assert await code_after(publish(OLD)) == grpc.StatusCode.OK
        assert await code_after(list_types(NEW)) == grpc.StatusCode.PERMISSION_DENIED, (
            "the limit follows the caller's name to its new key"
        )
        # A caller first named in the file is limited by the '*' entry.
        replace(keys, f"{OLD}=billing,{NEW}=billing,{LATE}=late")
        await until(list_types(LATE), grpc.StatusCode.OK)
        assert await code_after(publish(LATE)) == grpc.StatusCode.PERMISSION_DENIED
        replace(keys, f"{NEW}=billing\n")
        await until(publish(OLD), grpc.StatusCode.UNAUTHENTICATED)
        # Bad versions (half written, a short key, a key twice) are refused: the keys stay.
        with capture_logs() as logs:
            for bad in ("# nothing yet\n", "short=billing\n", f"{NEW}=billing\n{NEW}=ops\n"):
                replace(keys, bad)
                await asyncio.sleep(POLL * 4)
                assert await code_after(publish(NEW)) == grpc.StatusCode.OK
                assert await code_after(publish(OLD)) == grpc.StatusCode.UNAUTHENTICATED
        refused = [e for e in logs if e["event"] == "api_keys.refused"]
        assert len(refused) == 3, "each bad version logged once, not at every poll"
        assert "holds no KEY=NAME pair" in refused[0]["error"]
        assert "entry 1: expected KEY=NAME with a key of 16+ characters" in refused[1]["error"]
        assert "entry 2: its key is given twice" in refused[2]["error"]
        keys.unlink()
        await asyncio.sleep(POLL * 4)
        assert await code_after(publish(NEW)) == grpc.StatusCode.OK, "a file gone changes nothing"


@pytest.mark.parametrize(
    ("variable", "limit"),
    [
        ("INGEST_API_KEY_EVENT_TYPES", "billing=message.*"),
        ("INGEST_API_KEY_SOURCES", "billing=urn:test:*"),
        ("INGEST_API_KEY_APPLICATION_IDS", "billing=billing|urn:test:*"),
    ],
)
async def test_a_misspelt_new_caller_that_a_limit_would_not_cover_is_refused(
    infra: Infra, database_url: str, topic: str, tmp_path: Path, variable: str, limit: str
) -> None:
    """The start refuses a limit that names a caller no key has; a keys file changed
    later could otherwise bring billing's new key under a misspelt name, unlimited."""
    keys = tmp_path / "ingest-keys"
    keys.write_text(f"{OLD}=billing\n")
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys_file=str(keys),
            api_keys_file_poll_seconds=POLL,
            **{variable.lower(): limit},
        ) as ingest,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as channel,
    ):
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        publish = publisher(stub)

        with capture_logs() as logs:
            replace(keys, f"{NEW}=bililng\n")
            await asyncio.sleep(POLL * 6)
        [line] = [e for e in logs if e["event"] == "api_keys.refused"]
        assert line["error"] == (
            f"new caller 'bililng' would not be limited by {variable} (it names billing): a "
            "misspelt name? Name it there (a restart) or give it a '*' entry"
        )
        assert await code_after(publish(OLD)) == grpc.StatusCode.OK, "the keys in force stay"
        assert await code_after(publish(NEW)) == grpc.StatusCode.UNAUTHENTICATED
        replace(keys, f"{NEW}=billing\n")  # the name right: taken, and limited
        await until(publish(NEW), grpc.StatusCode.OK)
        assert await code_after(publish(OLD)) == grpc.StatusCode.UNAUTHENTICATED


async def test_webhooks_takes_a_tenants_new_key_but_never_the_internal_key(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    keys = tmp_path / "tenants"
    keys.write_text(f"{OLD}=acme\n")
    ingest = await start_ingest(infra, database_url, topic, relay_enabled=False)
    settings = webhooks_settings(
        database_url,
        ingest.running.port,
        webhooks_api_keys="",
        webhooks_api_keys_file=str(keys),
        api_keys_file_poll_seconds=POLL,
    )
    running = await start(await build_webhooks(settings, infra.kafka_settings()), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = webhooks_pb2_grpc.WebhookServiceStub(channel)

            def listing(key: str) -> Callable[[], Awaitable[object]]:
                request = webhooks_pb2.ListWebhooksRequest()
                return lambda: stub.ListWebhooks(request, metadata=bearer(key), timeout=10)

            assert await code_after(listing(OLD)) == grpc.StatusCode.OK
            with capture_logs() as logs:
                replace(keys, f"{OLD}=acme\n{INTERNAL_KEY}=acme\n")
                await asyncio.sleep(POLL * 6)
            [line] = [e for e in logs if e["event"] == "api_keys.refused"]
            assert "WEBHOOKS_INTERNAL_KEY must differ" in line["error"]
            assert await code_after(listing(INTERNAL_KEY)) == grpc.StatusCode.UNAUTHENTICATED
            replace(keys, f"{NEW}=acme\n")
            await until(listing(OLD), grpc.StatusCode.UNAUTHENTICATED)
            assert await code_after(listing(NEW)) == grpc.StatusCode.OK
    finally:
        await running.stop(1)
        await ingest.stop()


async def test_dispatch_and_reconcile_take_a_rotated_key_from_their_files(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    """The same file watcher, wired into dispatch's and reconcile's apps."""
    dispatch_keys, reconcile_keys = tmp_path / "dispatch-keys", tmp_path / "reconcile-keys"
    dispatch_keys.write_text(f"{OLD}=operator\n")
    reconcile_keys.write_text(f"{OLD}=operator\n")
    dispatch_settings = routes_only_dispatch(
        database_url,
        topic,
        dispatch_api_keys_file=str(dispatch_keys),
        api_keys_file_poll_seconds=POLL,
    )
    reconciling = reconcile_settings(
        database_url,
        1,
        reconcile_api_keys_file=str(reconcile_keys),
        api_keys_file_poll_seconds=POLL,
    )
    dispatch = await start(
        await build_dispatch(dispatch_settings, infra.kafka_settings()), "127.0.0.1:0"
    )
    reconcile = await start(
        await build_reconcile(reconciling, infra.kafka_settings(), infra.kafka_settings()),
        "127.0.0.1:0",
    )
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{dispatch.port}") as to_dispatch,
            grpc.aio.insecure_channel(f"127.0.0.1:{reconcile.port}") as to_reconcile,
        ):
            routes = dispatch_pb2_grpc.DispatchServiceStub(to_dispatch).ListRoutes
            found = reconcile_pb2_grpc.ReconcileServiceStub(to_reconcile).ListDiscrepancies

            def listing(key: str) -> list[Callable[[], Awaitable[object]]]:
                return [
                    lambda: routes(dispatch_pb2.ListRoutesRequest(), metadata=bearer(key)),
                    lambda: found(reconcile_pb2.ListDiscrepanciesRequest(), metadata=bearer(key)),
                ]

            for call in listing(OLD):
                assert await code_after(call) == grpc.StatusCode.OK
            replace(dispatch_keys, f"{NEW}=operator\n")
            replace(reconcile_keys, f"{NEW}=operator\n")
            for call in listing(OLD):
                await until(call, grpc.StatusCode.UNAUTHENTICATED)
            for call in listing(NEW):
                assert await code_after(call) == grpc.StatusCode.OK
    finally:
        await reconcile.stop(1)
        await dispatch.stop(1)
