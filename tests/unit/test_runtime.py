"""Shared runtime pieces: settings errors, named queries, errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from google.rpc import code_pb2
from herald.webhooks.v1 import webhooks_pb2
from structlog.testing import capture_logs

from herald.runtime import kafka
from herald.runtime.db import Queries, read_migrations
from herald.runtime.errors import FieldViolation, InvalidArgument, bad_request_of
from herald.runtime.interceptors import long_fields, nul_fields
from herald.runtime.settings import KafkaSettings, load_settings
from herald.services.ingest.settings import IngestSettings
from herald.services.reconcile.settings import VibeKafkaSettings

INGEST_SQL = Path(__file__).parents[2] / "src/herald/services/ingest/sql"


def test_bad_setting_exits_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INGEST_ADDR", "nowhere")
    monkeypatch.setenv("MAX_EVENT_BYTES", "-5")
    with pytest.raises(SystemExit) as exc:
        load_settings(IngestSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "INGEST_ADDR" in err
    assert "MAX_EVENT_BYTES" in err


def test_max_event_bytes_stops_at_what_kafka_takes_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A larger event was accepted, then never reached Kafka (1 MiB by default)
    monkeypatch.setenv("MAX_EVENT_BYTES", "2000000")
    with pytest.raises(SystemExit):
        load_settings(IngestSettings)
    assert "MAX_EVENT_BYTES" in capsys.readouterr().err
    monkeypatch.setenv("MAX_EVENT_BYTES", "1000000")
    assert load_settings(IngestSettings).max_event_bytes == 1_000_000


def test_sasl_needs_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SystemExit):
        load_settings(KafkaSettings)
    assert "KAFKA_SASL_MECHANISM" in capsys.readouterr().err
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "vibe")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "secret")
    settings = load_settings(KafkaSettings)
    assert "secret" not in repr(settings)


def test_a_kafka_ca_file_that_cannot_be_read_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Settings loaded; the first Kafka client made crashed its worker (exit 1), naming
    # no variable
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    monkeypatch.setenv("VIBE_KAFKA_SECURITY_PROTOCOL", "SSL")
    for path, reason in (
        (tmp_path / "missing.pem", "No such file or directory"),
        (not_pem, "NO_CERTIFICATE_OR_CRL_FOUND"),
    ):
        monkeypatch.setenv("VIBE_KAFKA_SSL_CAFILE", str(path))
        with pytest.raises(SystemExit) as exc:
            load_settings(VibeKafkaSettings)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"VIBE_KAFKA_SSL_CAFILE: cannot read the CA certificates in '{path}': " in err
        assert reason in err
    monkeypatch.setenv("VIBE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")  # not read: no TLS
    assert load_settings(VibeKafkaSettings).ssl_cafile == str(not_pem)


class _Admin:
    """describe_cluster and describe_configs of a cluster of ``brokers``."""

    def __init__(self, brokers: int, default: str | None, refused: bool = False) -> None:
        self.brokers = brokers
        self.default = default
        self.refused = refused

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(3, 3 + self.brokers)]}

    async def describe_configs(self, resources: list[ConfigResource]) -> list[Any]:
        (resource,) = resources
        assert (resource.resource_type, resource.name) == (ConfigResourceType.BROKER, "3")
        if self.refused:  # CLUSTER_AUTHORIZATION_FAILED
            return [SimpleNamespace(resources=[(31, "denied", 4, "3", [])])]
        entry: tuple[Any, ...] = ("default.replication.factor", self.default, True, 4, False, [])
        entries = [entry]
        return [SimpleNamespace(resources=[(0, "", 4, "3", entries)])]


async def test_topics_take_the_clusters_default_replication() -> None:
    assert await kafka.cluster_replication(_Admin(5, "3")) == 3
    assert await kafka.cluster_replication(_Admin(1, "1")) == 1
    with capture_logs() as logs:  # Kafka's own default on several brokers: said
        assert await kafka.cluster_replication(_Admin(3, "1")) == 1
    assert [e["event"] for e in logs] == ["kafka.replication_one"]
    # Unreadable: as many as there are brokers, at most 3, said
    with capture_logs() as logs:
        assert await kafka.cluster_replication(_Admin(5, None, True)) == 3
        assert await kafka.cluster_replication(_Admin(2, None, True)) == 2
    assert [e["event"] for e in logs] == ["kafka.replication_guessed"] * 2
    assert logs[0]["error"] == "ClusterAuthorizationFailedError: denied"


def test_every_named_query_and_migration_loads() -> None:
    queries = Queries(INGEST_SQL / "queries.sql")
    assert "claim_lanes" in queries.names()
    assert "INSERT INTO ingest.outbox" in queries.store_events
    assert [m.version for m in read_migrations("ingest", INGEST_SQL / "migrations")] == [1, 2]


def test_a_migration_includes_the_runtimes_tables_in_its_own_schema(tmp_path: Path) -> None:
    (tmp_path / "001_init.sql").write_text("CREATE SCHEMA shop;\n-- include: dlq_outbox\n")
    [migration] = read_migrations("shop", tmp_path)
    assert "CREATE TABLE shop.dlq_outbox (" in migration.sql
    assert "{schema}" not in migration.sql
    assert "-- include:" not in migration.sql
    (tmp_path / "002_more.sql").write_text("-- include: no_such_table\n")
    with pytest.raises(ValueError, match="no runtime table 'no_such_table'"):
        read_migrations("shop", tmp_path)


def test_invalid_argument_status_carries_bad_request() -> None:
    status = InvalidArgument([FieldViolation("a.b", "wrong")]).to_status()
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert bad_request_of(status) == [FieldViolation("a.b", "wrong")]


def test_nul_fields_names_every_string_holding_a_nul() -> None:
    request = webhooks_pb2.CreateWebhookRequest(
        webhook=webhooks_pb2.Webhook(
            name="a\x00",
            url="https://example.com/hook",
            event_types=["ok", "b\x00"],
            headers={"X-Ok": "v\x00"},
            metadata={"k\x00": "v", "fine": "yes"},
        )
    )
    assert sorted(nul_fields(request)) == [
        "webhook.event_types[1]",
        "webhook.headers['X-Ok']",
        "webhook.metadata['k\\x00']",
        "webhook.name",
    ]
    assert (
        nul_fields(webhooks_pb2.CreateWebhookRequest(webhook=webhooks_pb2.Webhook(name="clean")))
        == []
    )


def test_long_fields_names_the_strings_too_long_to_index() -> None:
    request = webhooks_pb2.CreateWebhookRequest(
        webhook=webhooks_pb2.Webhook(
            name="n" * 2001, event_types=["ok", "я" * 1001], headers={"X": "v" * 2000}
        )
    )
    # bytes, not characters: 1,001 Cyrillic letters are 2,002 bytes
    assert sorted(long_fields(request)) == ["webhook.event_types[1]", "webhook.name"]
