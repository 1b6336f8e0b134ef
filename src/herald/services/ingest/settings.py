"""Ingest's configuration (environment variables)."""

from __future__ import annotations

from herald.ingest.v1 import ingest_pb2
from pydantic import Field, model_validator

from herald.runtime.auth import (
    ApiKeysSetting,
    api_keys_file_field,
    callers_of,
    check_key_methods,
    methods_of,
)
from herald.runtime.key_pairs import parse_api_keys
from herald.runtime.settings import (
    MAX_RETENTION_DAYS,
    MAX_RETENTION_HOURS,
    MAX_TOPIC_PARTITIONS,
    RuntimeSettings,
)
from herald.services.ingest.catalog import (
    DEFAULT_MAX_EVENT_TYPES,
    DEFAULT_SCHEMA_BYTES,
    MAX_SCHEMA_BYTES,
)
from herald.services.ingest.publish_limits import (
    parse_application_id_limits,
    parse_source_limits,
    parse_type_limits,
)

# What INGEST_API_KEY_METHODS may name.
METHODS = methods_of(ingest_pb2.DESCRIPTOR.services_by_name["IngestService"])


class RelaySettings(RuntimeSettings):
    """Settings of the outbox relay, wherever it runs: inside ingest, or as its own
    process (``python -m herald.services.ingest_relay``)."""

    relay_concurrency: int = Field(1, ge=1, le=16, description="Relay loops per process.")
    relay_batch_size: int = Field(1000, ge=1, le=10_000, description="Rows per relay round.")
    dlq_topic: str = Field(
        "herald.dlq", description="Dead-letter topic (events Kafka refuses for good)."
    )


class IngestSettings(RelaySettings):
    """Settings of the ingest service (and of its outbox relay when it runs inside)."""

    ingest_addr: str = Field("127.0.0.1:50051", description="gRPC listen address.")
    ingest_metrics_addr: str = Field("127.0.0.1:9451", description="/metrics listen address.")
    ingest_api_keys: ApiKeysSetting = Field(
        "",
        description="KEY=NAME pairs, comma-separated (a key is 16+ characters): every call "
        "but health and reflection needs one; the name scopes idempotency keys. Empty: open.",
        repr=False,
    )
    ingest_api_keys_file: str = api_keys_file_field("INGEST_API_KEYS")
    ingest_api_key_methods: str = Field(
        "",
        description="NAME=Method|Method|... entries, comma-separated: a caller named (the "
        "NAME of INGEST_API_KEYS) may call only those IngestService methods, else "
        "PERMISSION_DENIED; a caller not named calls every method.",
    )
    ingest_api_key_event_types: str = Field(
        "",
        description="NAME=pattern|pattern|... entries, comma-separated: a caller named (a "
        "NAME of INGEST_API_KEYS) may publish only events whose type a pattern selects "
        "(a type, 'prefix.*' or '*'), else PERMISSION_DENIED; a caller not named publishes "
        "every type.",
    )
    ingest_api_key_sources: str = Field(
        "",
        description="NAME=source|prefix*|... entries, comma-separated: a caller named (a "
        "NAME of INGEST_API_KEYS) may publish only events whose source a pattern selects "
        "(the source exactly, or 'prefix*' by its start), else PERMISSION_DENIED; a caller "
        "not named publishes from every source.",
    )
    ingest_api_key_application_ids: str = Field(
        "",
        description="NAME=id|prefix*|... entries, comma-separated: a caller named (a NAME "
        "of INGEST_API_KEYS) may publish only under an application-id a pattern selects "
        "(the id exactly, or 'prefix*' by its start; the call's application-id metadata, "
        "else the event's source), else PERMISSION_DENIED; a caller not named under any.",
    )
    events_topic: str = Field("herald.events", description="Kafka topic of accepted events.")
    events_topic_partitions: int = Field(
        6, ge=1, le=MAX_TOPIC_PARTITIONS, description="Partitions when Herald creates it."
    )
    max_event_bytes: int = Field(
        1_000_000,
        ge=1024,
        le=1_000_000,
        description="Largest event, counted as its Kafka record (key, data and every "
        "header). At most 1,000,000: the event's record, its delivery jobs and notification "
        "jobs must fit Kafka's 1 MiB default limit (a larger event was accepted and then "
        "never reached Kafka).",
    )
    max_schema_bytes: int = Field(
        DEFAULT_SCHEMA_BYTES,
        ge=1024,
        le=MAX_SCHEMA_BYTES,
        description="Largest JSON Schema CreateEventType takes, in bytes of JSON; at most "
        "256 KiB (a definition travels whole in a ListEventTypes page). Every version's "
        "schema is kept as its JSON text; the most recently used 8 MiB of schemas stay "
        "compiled (about 20 times their size in memory).",
    )
    max_event_types: int = Field(
        DEFAULT_MAX_EVENT_TYPES,
        ge=1,
        le=100_000,
        description="Event type versions CreateEventType may register, all names together "
        "(the built-in types are not counted); beyond: RESOURCE_EXHAUSTED.",
    )
    relay_enabled: bool = Field(
        True,
        description="Run the outbox relay inside this process (false: relays run as "
        "their own processes, herald.services.ingest_relay).",
    )
    writer_committers: int = Field(2, ge=1, le=16, description="Concurrent group commits.")
    writer_linger_ms: float = Field(
        8.0,
        ge=0,
        le=100,
        description="How long a small group commit waits for more calls to join it.",
    )
    idempotency_ttl_hours: float = Field(
        72,
        gt=0,
        le=MAX_RETENTION_HOURS,
        description="How long keys are remembered (at most 10 years).",
    )
    event_retention_days: float = Field(
        90, gt=0, le=MAX_RETENTION_DAYS, description="How long events are kept (at most 10 years)."
    )
    outbox_retention_hours: float = Field(
        24,
        gt=0,
        le=MAX_RETENTION_HOURS,
        description="How long sent rows are kept (at most 10 years).",
    )

    @model_validator(mode="after")
    def _key_methods(self) -> IngestSettings:
        """Every limit checked, and every wrong one named at once."""
        problems = []
        try:
            check_key_methods(
                self.ingest_api_keys,
                self.ingest_api_key_methods,
                "INGEST_API_KEY_METHODS",
                METHODS,
                self.client_names(),
            )
        except ValueError as exc:
            problems.append(str(exc))
        keys = parse_api_keys(self.ingest_api_keys)
        for variable, value, parse in (
            ("INGEST_API_KEY_EVENT_TYPES", self.ingest_api_key_event_types, parse_type_limits),
            ("INGEST_API_KEY_SOURCES", self.ingest_api_key_sources, parse_source_limits),
            (
                "INGEST_API_KEY_APPLICATION_IDS",
                self.ingest_api_key_application_ids,
                parse_application_id_limits,
            ),
        ):
            try:
                parse(value, callers_of(keys, self.client_names()), keys)
            except ValueError as exc:
                problems.append(f"{variable}: {exc}")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def callers(self) -> set[str]:
        """Who the limits may name: the names of INGEST_API_KEYS' keys, else the
        client certificate identities of GRPC_TLS_CLIENT_NAMES."""
        return callers_of(parse_api_keys(self.ingest_api_keys), self.client_names())


class IngestRelaySettings(RelaySettings):
    """Settings of a relay running as its own process (``herald.services.ingest_relay``)."""

    ingest_relay_addr: str = Field(
        "127.0.0.1:50055", description="gRPC listen address (health checks only)."
    )
    ingest_relay_metrics_addr: str = Field("127.0.0.1:9455", description="/metrics listen address.")
