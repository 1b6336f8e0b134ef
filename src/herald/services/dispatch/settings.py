"""The dispatch service's configuration (environment variables)."""

from __future__ import annotations

from pathlib import Path

from herald.dispatch.v1 import dispatch_pb2
from pydantic import Field, field_validator, model_validator

from herald.runtime.auth import (
    ApiKeysSetting,
    KeySetting,
    api_keys_file_field,
    check_key_methods,
    methods_of,
)
from herald.runtime.settings import (
    DAY_SECONDS,
    HOUR_SECONDS,
    MAX_RETENTION_DAYS,
    RuntimeSettings,
)
from herald.services.dispatch.retry import Schedule
from herald.services.dispatch.routes import DEFAULT_TOPIC, is_channel, routes_from_json

# What DISPATCH_API_KEY_METHODS may name.
METHODS = methods_of(dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"])


class DispatchSettings(RuntimeSettings):
    """Settings of the dispatch service."""

    dispatch_addr: str = Field("127.0.0.1:50052", description="gRPC listen address.")
    dispatch_metrics_addr: str = Field("127.0.0.1:9452", description="/metrics address.")
    dispatch_api_keys: ApiKeysSetting = Field(
        "",
        description="KEY=NAME pairs, comma-separated (a key is 16+ characters): every call "
        "but health and reflection needs one. Empty: open.",
        repr=False,
    )
    dispatch_api_keys_file: str = api_keys_file_field("DISPATCH_API_KEYS")
    dispatch_api_key_methods: str = Field(
        "",
        description="NAME=Method|Method|... entries, comma-separated: a caller named (the "
        "NAME of DISPATCH_API_KEYS) may call only those DispatchService methods, else "
        "PERMISSION_DENIED; a caller not named calls every method.",
    )
    events_topic: str = Field("herald.events", description="Topic consumed.")
    dispatch_group: str = Field("herald-dispatch", description="Its consumer group.")
    deliveries_topic: str = Field("herald.deliveries", description="Delivery jobs go here.")
    dlq_topic: str = Field("herald.dlq", description="Dead-letter topic.")
    notification_channels: str = Field(
        "email,push,sms",
        description="Channels whose herald.notifications.<channel> topics are created at start "
        "(letters, digits, '_' and '-', as a route's channel).",
    )
    webhooks_fanout: bool = Field(
        True, description="Fan events out to webhooks (false: routes only, no webhooks service)."
    )
    webhooks_addr: str = Field("127.0.0.1:50053", description="The webhooks service.")
    webhooks_internal_key: KeySetting = Field(
        "",
        description="Key for the webhooks SubscriptionService (as given to webhooks; "
        "16+ characters).",
        repr=False,
    )
    subscriptions_refresh_seconds: float = Field(
        0.5, gt=0, le=1, description="How often webhook subscriptions are refreshed."
    )
    subscriptions_max_staleness_seconds: float = Field(
        10,
        gt=0,
        le=DAY_SECONDS,
        description="Older than this (webhooks unreachable), webhook targets wait.",
    )
    ingest_addr: str = Field("127.0.0.1:50051", description="Ingest (for alert events).")
    ingest_client_key: KeySetting = Field(
        "",
        description="Key presented on calls to ingest (one of INGEST_API_KEYS; 16+ "
        "characters). Empty: none.",
        repr=False,
    )
    retry_schedule: str = Field(
        "5m,30m,2h,6h,24h",
        description="Delays before each retry of a failed target (s, m, h, d); then DLQ.",
    )
    send_timeout_seconds: float = Field(
        10,
        gt=0,
        le=HOUR_SECONDS,
        description="How long a record may take to be acknowledged by Kafka.",
    )
    dead_letter_retention_days: float = Field(
        90,  # as webhooks keeps its failed deliveries
        gt=0,
        le=MAX_RETENTION_DAYS,
        description="How long a dead letter (with the record it holds) is kept, redriven or "
        "not: ListDeadLetters and RedriveDeadLetters reach back this far (herald.dlq has "
        "the record too).",
    )
    routes_file: Path | None = Field(
        None, description="A JSON file of routes (a list of Route objects) loaded at start."
    )
    builtin_routes: bool = Field(True, description="Load the Notification API's routes.")

    @field_validator("notification_channels")
    @classmethod
    def _channels(cls, value: str) -> str:
        for channel in cls.channels_of(value):
            if not is_channel(channel):
                raise ValueError(
                    f"{channel!r} is not a channel name: 1 to 64 ASCII letters, digits, '_' and '-'"
                )
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        Schedule.parse(value)
        return value

    @field_validator("routes_file")
    @classmethod
    def _file(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        try:  # a bad file stops the start here, naming ROUTES_FILE
            routes_from_json(value.read_text())
        except OSError as exc:
            raise ValueError(f"{value}: cannot read it: {exc.strerror or exc}") from None
        except ValueError as exc:  # not UTF-8, not JSON, a bad route
            raise ValueError(f"{value}: {exc}") from None
        return value

    def schedule(self) -> Schedule:
        return Schedule.parse(self.retry_schedule)

    @staticmethod
    def channels_of(value: str) -> list[str]:
        """The channels of a comma-separated list."""
        return [c.strip() for c in value.split(",") if c.strip()]

    def notification_topics(self) -> list[str]:
        """The topics of the notification channels (created at start)."""
        return [
            DEFAULT_TOPIC.replace("{channel}", c)
            for c in self.channels_of(self.notification_channels)
        ]

    def own_topics(self) -> tuple[str, str, str]:
        """The topics no route's jobs may go to (routes.check)."""
        return (self.events_topic, self.deliveries_topic, self.dlq_topic)

    @model_validator(mode="after")
    def _routes_own_topics(self) -> DispatchSettings:
        if self.routes_file is not None:  # read and checked already (_file)
            try:
                routes_from_json(self.routes_file.read_text(), self.own_topics())
            except (OSError, ValueError) as exc:
                raise ValueError(f"ROUTES_FILE: {self.routes_file}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _key_methods(self) -> DispatchSettings:
        check_key_methods(
            self.dispatch_api_keys,
            self.dispatch_api_key_methods,
            "DISPATCH_API_KEY_METHODS",
            METHODS,
            self.client_names(),
        )
        return self
