"""A service that cannot start says why in one line naming the variable, and exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from herald.runtime import kafka
from tests.acceptance.conftest import ROOT, free_port
from tests.conftest import Infra
from tests.tls_certs import make_pki

pytestmark = pytest.mark.acceptance


def run_ingest(infra: Infra, database_url: str, **env: str) -> tuple[int, str]:
    """Runs ingest with ``env`` until it exits; its exit code and output."""
    full_env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'gen'}",
        "INGEST_ADDR": f"127.0.0.1:{free_port()}",
        "INGEST_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "LOG_LEVEL": "WARNING",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "herald.services.ingest"],
        env=full_env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_database_it_cannot_reach_is_named_without_its_password(infra: Infra, topic: str) -> None:
    code, output = run_ingest(
        infra, "postgresql://herald:s3cret@127.0.0.1:1/herald", EVENTS_TOPIC=topic
    )
    assert code == 1
    assert output.startswith(
        "cannot start: DATABASE_URL: cannot connect to postgresql://herald:***@127.0.0.1:1/herald: "
    )
    assert output.count("\n") == 1
    assert "s3cret" not in output


def test_a_metrics_address_in_use_is_named(infra: Infra, database_url: str, topic: str) -> None:
    # An OSError traceback, then "Event loop is closed"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, output = run_ingest(
            infra, database_url, EVENTS_TOPIC=topic, INGEST_METRICS_ADDR=address
        )
    assert code == 1
    assert output == (
        f"cannot start: INGEST_METRICS_ADDR: cannot serve /metrics on {address}: "
        "Address already in use\n"
    )


async def test_a_topic_kafka_refuses_to_create_stops_the_start(
    infra: Infra, database_url: str, topic: str
) -> None:
    # The refusal was ignored: kafka.topics_created, Publish answered OK, nothing sent
    await kafka.ensure_topics(infra.kafka_settings(), [topic], partitions=1)
    colliding = topic.replace(".", "_")
    code, output = run_ingest(infra, database_url, EVENTS_TOPIC=colliding)
    assert code == 1
    assert '"event":"kafka.topic_not_created"' in output
    assert output.splitlines()[-1].startswith(
        f"cannot start: Kafka refused to create topic '{colliding}': InvalidTopicError: "
    )


def test_a_wrong_topic_name_is_invalid_configuration(infra: Infra, database_url: str) -> None:
    code, output = run_ingest(infra, database_url, EVENTS_TOPIC="bad%topic")
    assert code == 2
    assert output == (
        "invalid configuration:\n"
        "  EVENTS_TOPIC: 'bad%topic' is not a Kafka topic name: 1 to 249 ASCII letters, "
        "digits, '.', '_' and '-' (not '.' or '..')\n"
    )


def test_every_wrong_variable_is_named_in_one_go(infra: Infra, database_url: str) -> None:
    """Kafka's variables and OpenTelemetry's were named only once the service's own
    were right: an operator went round three times."""
    code, output = run_ingest(
        infra,
        database_url,
        DATABASE_POOL_SIZE="abc",
        KAFKA_SECURITY_PROTOCOL="TLS",
        OTEL_SDK_DISABLED="maybe",
    )
    assert code == 2
    lines = output.splitlines()
    assert lines[0] == "invalid configuration:"
    named = sorted(line.split()[0].split("=")[0].rstrip(":") for line in lines[1:])
    assert named == ["DATABASE_POOL_SIZE", "KAFKA_SECURITY_PROTOCOL", "OTEL_SDK_DISABLED"]


def test_a_listen_address_whose_host_does_not_resolve_is_named_at_once(
    infra: Infra, database_url: str, topic: str
) -> None:
    # Retried for 70 s as if the port were taken ("server.address_in_use"), then an
    # OSError traceback
    code, output = run_ingest(
        infra, database_url, EVENTS_TOPIC=topic, INGEST_ADDR="nohost.invalid:50999"
    )
    assert code == 1
    assert output.startswith("cannot start: INGEST_ADDR: cannot listen on nohost.invalid:50999: ")
    assert "address_in_use" not in output
    assert output.count("\n") == 1


def test_a_grpc_address_another_process_listens_on_is_named_at_once(
    infra: Infra, database_url: str, topic: str
) -> None:
    # Retried for 70 s, with a grpc error line a second, before the start stopped
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        started = time.monotonic()
        code, output = run_ingest(infra, database_url, EVENTS_TOPIC=topic, INGEST_ADDR=address)
    assert time.monotonic() - started < 30
    assert code == 1
    assert output == (
        f"cannot start: INGEST_ADDR: cannot listen on {address}: the port is in use "
        "(another process listens on it)\n"
    )


def test_a_tls_key_that_is_not_the_certificates_is_named(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    code, output = run_ingest(
        infra,
        database_url,
        EVENTS_TOPIC=topic,
        GRPC_TLS_CERT_FILE=str(pki.server_cert),
        GRPC_TLS_KEY_FILE=str(pki.client_key),
    )
    assert code == 2
    assert output == (
        "invalid configuration:\n"
        "  GRPC_TLS_KEY_FILE: not the private key of GRPC_TLS_CERT_FILE's certificate\n"
    )
