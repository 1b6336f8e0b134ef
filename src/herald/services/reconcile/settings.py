"""The reconcile service's configuration (environment variables)."""

from __future__ import annotations

import os
from typing import Literal

from herald.reconcile.v1 import reconcile_pb2
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from herald.runtime.auth import (
    ApiKeysSetting,
    KeySetting,
    api_keys_file_field,
    check_key_methods,
    methods_of,
)
from herald.runtime.settings import (
    DAY_SECONDS,
    MAX_RETENTION_DAYS,
    YEAR_DAYS,
    KafkaSettings,
    RuntimeSettings,
)
from herald.services.reconcile.inputs import Kind

OutputFormat = Literal["protobuf", "json"]


# What RECONCILE_API_KEY_METHODS may name.
METHODS = methods_of(reconcile_pb2.DESCRIPTOR.services_by_name["ReconcileService"])


class VibeKafkaSettings(KafkaSettings):
    """Vibeapp's Kafka cluster, under the ``VIBE_KAFKA_`` prefix (the same fields as
    ``KAFKA_``). Unless ``VIBE_KAFKA_BOOTSTRAP_SERVERS`` is set, Herald's own cluster
    (and its ``KAFKA_`` security settings) is used."""

    model_config = SettingsConfigDict(env_prefix="VIBE_KAFKA_", frozen=True, extra="ignore")

    @staticmethod
    def configured() -> bool:
        return bool(os.environ.get("VIBE_KAFKA_BOOTSTRAP_SERVERS"))


_INPUTS = ("TICKETLAND_EVENTS_TOPIC", "TICKETLAND_ORDERS_TOPIC", "TICKETLAND_REFUNDS_TOPIC")
_OUTPUTS = ("VIBE_EVENTS_TOPIC", "VIBE_ORDERS_TOPIC", "VIBE_REFUNDS_TOPIC")


class ReconcileSettings(RuntimeSettings):
    """Settings of the reconcile service."""

    reconcile_addr: str = Field("127.0.0.1:50054", description="gRPC listen address.")
    reconcile_metrics_addr: str = Field("127.0.0.1:9454", description="/metrics address.")
    reconcile_api_keys: ApiKeysSetting = Field(
        "",
        description="KEY=NAME pairs, comma-separated (a key is 16+ characters): every call "
        "but health and reflection needs one. Empty: open.",
        repr=False,
    )
    reconcile_api_keys_file: str = api_keys_file_field("RECONCILE_API_KEYS")
    reconcile_api_key_methods: str = Field(
        "",
        description="NAME=Method|Method|... entries, comma-separated: a caller named (the "
        "NAME of RECONCILE_API_KEYS) may call only those ReconcileService methods, else "
        "PERMISSION_DENIED; a caller not named calls every method.",
    )
    ticketland_events_topic: str = Field("ticketland.events", description="Input: events.")
    ticketland_orders_topic: str = Field("ticketland.orders", description="Input: orders.")
    ticketland_refunds_topic: str = Field("ticketland.refunds", description="Input: refunds.")
    reconcile_group: str = Field("herald-reconcile", description="The inputs' consumer group.")
    vibe_events_topic: str = Field("vibe.events", description="Output: events.")
    vibe_orders_topic: str = Field("vibe.orders", description="Output: orders.")
    vibe_refunds_topic: str = Field("vibe.refunds", description="Output: refunds.")
    vibe_events_format: OutputFormat = Field("protobuf", description="protobuf or json.")
    vibe_orders_format: OutputFormat = Field("protobuf", description="protobuf or json.")
    vibe_refunds_format: OutputFormat = Field("protobuf", description="protobuf or json.")
    vibe_schema_version: str = Field("1.0", description="The schema-version header.")
    vibe_application_id: str = Field("ticketland", description="The application-id header.")
    dlq_topic: str = Field(
        "herald.dlq",
        description="Dead-letter topic for bad input records and outputs Vibeapp's Kafka "
        "refuses for good.",
    )
    ingest_addr: str = Field("127.0.0.1:50051", description="Ingest (conflict/reconciled events).")
    ingest_client_key: KeySetting = Field(
        "",
        description="Key presented on calls to ingest (one of INGEST_API_KEYS; 16+ "
        "characters). Empty: none.",
        repr=False,
    )
    park_limit_seconds: float = Field(
        900,
        gt=0,
        le=YEAR_DAYS * DAY_SECONDS,
        description="How long an order may wait for its event (or a refund for its order) "
        "before it becomes a discrepancy (at most a year).",
    )
    refused_retry_seconds: float = Field(
        600,
        gt=0,
        le=YEAR_DAYS * DAY_SECONDS,
        description="How long an output Vibeapp's Kafka refused for good (too large) is set "
        "aside, with what depends on it, before it is tried again (at most a year).",
    )
    create_topics: bool = Field(
        True, description="Create missing input and output topics at start."
    )
    input_retention_days: float = Field(
        90,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="How long the coordinates of input records taken or dead-lettered are "
        "kept (0: for ever). A replay still skips the purged ones (each partition keeps the "
        "offset it was purged up to); RunReconciliation's input totals reach back this far.",
    )
    report_retention_days: float = Field(
        365,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="How long reconciliation reports are kept for GetReconciliationReport "
        "(0: for ever).",
    )
    ledger_concurrency: int = Field(
        2,
        ge=1,
        le=16,
        description="Ledger transactions a batch of input records is split into, by event, "
        "run at once (each its own connection of DATABASE_POOL_SIZE).",
    )

    @model_validator(mode="after")
    def _topics_apart(self) -> ReconcileSettings:
        """Each input and each output has its own topic (records are told apart by
        their topic, by reconcile and by Vibeapp), and neither outputs nor dead letters
        go to a topic reconcile reads: it would take its own records as Ticketland's
        (or dead-letter them again)."""
        for names in (_INPUTS, _OUTPUTS):
            if len({getattr(self, name.lower()) for name in names}) < len(names):
                raise ValueError(f"{', '.join(names)} must be three different topics")
        read = {getattr(self, name.lower()): name for name in _INPUTS}
        for name in (*_OUTPUTS, "DLQ_TOPIC"):
            if (topic := getattr(self, name.lower())) in read:
                raise ValueError(f"{name} ({topic}) must not be an input topic ({read[topic]})")
        return self

    @field_validator("vibe_schema_version", "vibe_application_id")
    @classmethod
    def _header_value(cls, value: str) -> str:
        """Vibeapp's contract: both headers carry a value."""
        if not value.strip():
            raise ValueError("must not be empty (the header must carry a value)")
        return value

    @model_validator(mode="after")
    def _pool_has_room(self) -> ReconcileSettings:
        """The ledger's transactions leave connections for the relay, sweeper and API."""
        if self.ledger_concurrency >= self.database_pool_size:
            raise ValueError(
                f"LEDGER_CONCURRENCY ({self.ledger_concurrency}) must be below "
                f"DATABASE_POOL_SIZE ({self.database_pool_size}): the relay, the sweeper "
                "and the API need connections of the pool too"
            )
        return self

    def input_topics(self) -> dict[str, Kind]:
        return {
            self.ticketland_events_topic: "event",
            self.ticketland_orders_topic: "order",
            self.ticketland_refunds_topic: "refund",
        }

    def output_topics(self) -> dict[Kind, str]:
        return {
            "event": self.vibe_events_topic,
            "order": self.vibe_orders_topic,
            "refund": self.vibe_refunds_topic,
        }

    def output_formats(self) -> dict[Kind, OutputFormat]:
        return {
            "event": self.vibe_events_format,
            "order": self.vibe_orders_format,
            "refund": self.vibe_refunds_format,
        }

    @model_validator(mode="after")
    def _key_methods(self) -> ReconcileSettings:
        check_key_methods(
            self.reconcile_api_keys,
            self.reconcile_api_key_methods,
            "RECONCILE_API_KEY_METHODS",
            METHODS,
            self.client_names(),
        )
        return self
