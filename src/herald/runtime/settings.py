"""Configuration read once from the environment, validated at start, then frozen.

Every service's settings class derives from :class:`RuntimeSettings`. A wrong value
stops the process with a message that names the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class KafkaSettings(BaseSettings):
    """How to reach one Kafka cluster. Herald's own uses the ``KAFKA_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Comma-separated HOST:PORT list of brokers."
    )
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: str | None = Field(None, description="SASL password; never logged.", repr=False)
    ssl_cafile: str | None = Field(None, description="PEM file of the CA that signed the brokers.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        for server in value.split(","):
            _check_host_port(server.strip())
        return value

    def model_post_init(self, _context: object) -> None:
        """Cross-field checks: SASL protocols need a mechanism and credentials."""
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name, value in (
                    ("sasl_mechanism", self.sasl_mechanism),
                    ("sasl_username", self.sasl_username),
                    ("sasl_password", self.sasl_password),
                )
                if not value
            ]
            if missing:
                prefix = self.model_config.get("env_prefix", "")
                names = ", ".join(f"{prefix}{m}".upper() for m in missing)
                raise ValueError(f"{names} must be set when security protocol is SASL")


class RuntimeSettings(BaseSettings):
    """Settings every Herald service shares."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:54329/herald",
        description="PostgreSQL DSN (postgresql://user:password@host:port/db).",
    )
    database_pool_size: int = Field(10, ge=1, le=200, description="asyncpg pool size.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Minimum log level."
    )
    log_format: Literal["json", "console"] = Field(
        "json", description="json in production; console is readable in development."
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="How long in-flight calls may drain on SIGTERM."
    )

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return value


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Builds ``cls`` from the environment or exits naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for error in exc.errors():
            name = (prefix + ".".join(str(p) for p in error["loc"])).upper() or cls.__name__
            lines.append(f"  {name}: {error['msg']}")
        sys.stderr.write("invalid configuration:\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
    except ValueError as exc:
        sys.stderr.write(f"invalid configuration: {exc}\n")
        raise SystemExit(2) from None


def address_setting(value: str) -> str:
    """Validates a HOST:PORT listen address (for ``*_ADDR`` variables)."""
    return _check_host_port(value)
