"""The webhooks service's configuration (environment variables)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from herald.runtime.auth import KeySetting, api_keys_file_field
from herald.runtime.key_pairs import parse_api_keys
from herald.runtime.settings import (
    DAY_SECONDS,
    HOUR_SECONDS,
    MAX_RETENTION_DAYS,
    RuntimeSettings,
)
from herald.services.webhooks.signing import DEFAULT_HEADER_PREFIX, prefix_problem
from herald.services.webhooks.store import DEFAULT_MAX_PER_TENANT

VERSION = "0.1"  # of Herald's webhooks, in its default User-Agent
_USER_AGENT = re.compile(r"[!-~]([ -~]{0,198}[!-~])?")


class WebhooksSettings(RuntimeSettings):
    """Settings of the webhooks service."""

    KEY_NAMES = "TENANT"

    webhooks_addr: str = Field("127.0.0.1:50053", description="gRPC listen address.")
    webhooks_metrics_addr: str = Field("127.0.0.1:9453", description="/metrics address.")
    webhooks_api_keys: str = Field(
        ..., description="KEY=TENANT pairs, comma-separated; a key is 16+ characters.", repr=False
    )
    webhooks_api_keys_file: str = api_keys_file_field("WEBHOOKS_API_KEYS")
    webhooks_internal_key: KeySetting = Field(
        "",
        description="Key of Herald's own services (dispatch) for SubscriptionService; "
        "16+ characters. Empty: that service refuses every call.",
        repr=False,
    )
    webhooks_master_key: str = Field(
        ...,
        description="Base64 of 32 random bytes: encrypts secrets at rest (AES-256-GCM).",
        repr=False,
    )
    ingest_addr: str = Field(
        "127.0.0.1:50051", description="Where the event-type catalog is (ingest)."
    )
    ingest_client_key: KeySetting = Field(
        "",
        description="Key presented on calls to ingest (one of INGEST_API_KEYS; 16+ "
        "characters). Empty: none.",
        repr=False,
    )
    event_types_cache_seconds: float = Field(
        2.0, ge=0, le=HOUR_SECONDS, description="How long the catalog's type names are reused."
    )

    deliveries_topic: str = Field("herald.deliveries", description="Topic of delivery jobs.")
    deliveries_group: str = Field("herald-webhooks", description="Its consumer group.")
    dlq_topic: str = Field("herald.dlq", description="Dead-letter topic.")
    disable_after_seconds: float = Field(
        5 * 86400,
        ge=0,
        le=MAX_RETENTION_DAYS * DAY_SECONDS,
        description="A webhook failing without any 2xx for this long is disabled (0: never; "
        "at most 10 years).",
    )
    secret_rotation_days: float = Field(
        90,  # seed 000: HMAC keys are rotated at least every 90 days
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="A webhook secret older than this is announced as due for rotation "
        "(herald.webhook.secret_rotation_due, once per secret; 0: never).",
    )
    delivery_retention_days: float = Field(
        90,  # Bitrix24's integration log (seed 001) is kept 90 days
        gt=0,
        le=MAX_RETENTION_DAYS,
        description="How long a finished delivery (delivered or failed) and its attempts are "
        "kept: the delivery log, stats, resends and RecoverWebhook reach back this far.",
    )
    delivery_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="An attempt succeeds with a 2xx within this time."
    )
    delivery_concurrency: int = Field(
        64, ge=1, le=2000, description="Attempts in flight per process."
    )
    delivery_concurrency_per_webhook: int = Field(
        0,
        ge=0,
        le=2000,
        description="Attempts in flight per process for a webhook that is slow or not tried "
        "yet, so that one slow endpoint cannot take every slot; 0 = a quarter of "
        "DELIVERY_CONCURRENCY (at least 1).",
    )
    webhooks_max_per_tenant: int = Field(
        DEFAULT_MAX_PER_TENANT,
        ge=1,
        le=1_000_000,
        description="Webhooks one tenant may have: every event a webhook takes is one more "
        "POST, so without a bound one tenant could multiply every event without limit.",
    )
    webhooks_header_prefix: str = Field(
        DEFAULT_HEADER_PREFIX,
        description="Prefix of the delivery headers Herald sets (<prefix>-Event, "
        "-Delivery, -Timestamp, -Signature, -Retry-Count, ...); X-Katya gives the seed's.",
    )
    webhooks_user_agent: str = Field(
        f"Herald-Webhooks/{VERSION}",
        description="The User-Agent of deliveries; Katya-Webhooks/1.0 gives the seed's.",
    )
    webhooks_allowed_networks: str = Field(
        "",
        description="CIDRs that destinations may resolve to although not public "
        "(e.g. 127.0.0.0/8 in development); everything else non-public is refused.",
    )

    @field_validator("webhooks_api_keys")
    @classmethod
    def _keys(cls, value: str) -> str:
        if not parse_api_keys(value, "TENANT"):
            raise ValueError("at least one KEY=TENANT pair")
        return value

    @model_validator(mode="after")
    def _internal_apart(self) -> WebhooksSettings:
        """The internal key opens only SubscriptionService (every tenant's subscriptions)
        and a tenant key only that tenant's WebhookService: one key for both would let
        that tenant read every tenant's webhooks, and dispatch act as that tenant."""
        problem = internal_key_apart(
            self.webhooks_internal_key, parse_api_keys(self.webhooks_api_keys)
        )
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("webhooks_master_key")
    @classmethod
    def _master(cls, value: str) -> str:
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        if len(key) != 32:
            raise ValueError(f"decodes to {len(key)} bytes; 32 are needed")
        return value

    @field_validator("webhooks_header_prefix")
    @classmethod
    def _header_prefix(cls, value: str) -> str:
        if (problem := prefix_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("webhooks_user_agent")
    @classmethod
    def _user_agent(cls, value: str) -> str:
        if not _USER_AGENT.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a User-Agent: 1 to 200 printable ASCII characters, "
                "no spaces around"
            )
        return value

    @field_validator("webhooks_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for cidr in cls.networks_of(value):
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return value

    @staticmethod
    def networks_of(value: str) -> list[str]:
        """The CIDRs of a comma-separated list."""
        return [c.strip() for c in value.split(",") if c.strip()]

    def master_key(self) -> bytes:
        """The decoded master key."""
        return base64.b64decode(self.webhooks_master_key)


def internal_key_apart(internal_key: str, tenants: dict[str, str]) -> str | None:
    """Why ``tenants`` (WEBHOOKS_API_KEYS, or a new version of its file) cannot be taken
    beside ``internal_key``: the internal key is one of them. None if they can."""
    if internal_key and internal_key in tenants:
        return (
            "WEBHOOKS_INTERNAL_KEY must differ from every key of WEBHOOKS_API_KEYS; it is "
            f"the key of tenant {tenants[internal_key]!r}, which could then read every "
            "tenant's subscriptions"
        )
    return None
