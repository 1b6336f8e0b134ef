"""Configuration read once from the environment, validated at start, then frozen.

Every service's settings class derives from :class:`RuntimeSettings`. A wrong value
stops the process with a message that names the variable (see :func:`load_settings`);
so does a value that is well formed but unusable when the service starts (a database it
cannot reach, an address in use: :class:`StartError`).
"""

from __future__ import annotations

import re
import ssl
import sys
from dataclasses import replace
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald.runtime.key_pairs import read_key_file
from herald.runtime.tls import (
    ClientTls,
    ClientTlsFiles,
    ServerTls,
    TlsFiles,
    check_dates,
    check_pair,
    read_certificates,
    read_client_tls,
    read_private_key,
    read_revocations,
    read_server_tls,
)
from herald.runtime.tracing import traces_exporter, tracing_enabled

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# Upper bounds of durations: far beyond any sensible value, and far below what would
# overflow a timedelta, a Kafka timeout in ms (int32) or a PostgreSQL timestamp.
HOUR_SECONDS = 3600.0
API_KEYS_FILE_POLL_SECONDS = 5.0
DAY_SECONDS = 86400.0
YEAR_DAYS = 365.0
MAX_RETENTION_DAYS = 10 * YEAR_DAYS  # retentions and TTLs
MAX_RETENTION_HOURS = MAX_RETENTION_DAYS * 24
MAX_TOPIC_PARTITIONS = 1000  # Kafka refuses a request to create 10,000 (KRaft)
MAX_REPLICATION_FACTOR = 32767  # Kafka's field is an int16

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


# A host name, an IPv4 address or a bracketed IPv6 one: not a URL ("http://x:1" split at
# its last colon looked like host "http://x").
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (no scheme), got {value!r}")
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
    topic_replication_factor: int = Field(
        0,
        ge=0,
        le=MAX_REPLICATION_FACTOR,
        description="Replicas of each topic Herald creates; 0: the cluster's "
        "default.replication.factor.",
    )

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
        if self.security_protocol.endswith("SSL") and self.ssl_cafile:
            # Read by every Kafka client as it is made: a bad file stopped the first
            # worker to make one (exit 1, naming no variable), not the start.
            try:
                ssl.create_default_context(cafile=self.ssl_cafile)
            except (OSError, ssl.SSLError) as exc:
                name = f"{self.model_config.get('env_prefix', '')}ssl_cafile".upper()
                raise ValueError(
                    f"{name}: cannot read the CA certificates in {self.ssl_cafile!r}: "
                    f"{exc.strerror or exc}"
                ) from None


class RuntimeSettings(BaseSettings):
    """Settings every Herald service shares."""

    # allow_inf_nan=False: no float setting may be inf or nan ("1e400" is inf too).
    model_config = SettingsConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

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
        10.0, ge=0, le=HOUR_SECONDS, description="How long in-flight calls may drain on SIGTERM."
    )
    grpc_tls_cert_file: str = Field(
        "", description="PEM certificate (chain) of the gRPC port; with the key: TLS only."
    )
    grpc_tls_key_file: str = Field("", description="PEM private key of GRPC_TLS_CERT_FILE.")
    grpc_tls_client_ca_file: str = Field(
        "", description="PEM CA: callers must present a certificate it signed (mutual TLS)."
    )
    grpc_tls_client_crl_file: str = Field(
        "",
        description="PEM CRLs, each signed by GRPC_TLS_CLIENT_CA_FILE: a call whose client "
        "certificate one revokes is refused (UNAUTHENTICATED).",
    )
    grpc_tls_ca_file: str = Field(
        "", description="PEM CA that signed the other services' certificates: calls them over TLS."
    )
    grpc_tls_client_cert_file: str = Field(
        "", description="PEM certificate presented on calls to other Herald services."
    )
    grpc_tls_client_key_file: str = Field(
        "", description="PEM private key of GRPC_TLS_CLIENT_CERT_FILE."
    )
    grpc_tls_client_names: str = Field(
        "",
        description="Client certificate identities let in, comma-separated (a subject "
        "alternative name, else the common name); others: PERMISSION_DENIED. Empty: any "
        "certificate GRPC_TLS_CLIENT_CA_FILE signed.",
    )
    grpc_tls_reload_seconds: float = Field(
        60.0,
        ge=0,
        le=HOUR_SECONDS,
        description="How often the TLS files are read again: the gRPC port's certificate, "
        "key, client CA and CRLs, and the CA and client certificate of calls to the other "
        "services (a renewal is used with no restart); 0: at start only.",
    )
    api_keys_file_poll_seconds: float = Field(
        API_KEYS_FILE_POLL_SECONDS,
        ge=0.05,
        le=HOUR_SECONDS,
        description="How often a service re-reads its *_API_KEYS_FILE (0.05 to 3600).",
    )

    # What a *_API_KEYS pair names: a caller (webhooks: a tenant).
    KEY_NAMES: ClassVar[str] = "NAME"

    @model_validator(mode="before")
    @classmethod
    def _api_keys_files(cls, data: Any) -> Any:
        """A ``*_API_KEYS_FILE`` given: its pairs become ``*_API_KEYS`` (which must then
        be empty), checked as that would be, the file named if not good."""
        if not isinstance(data, dict):
            return data
        for name in cls.model_fields:
            keys_name = name.removesuffix("_file")
            if not name.endswith("_api_keys_file") or not (path := data.get(name)):
                continue
            if data.get(keys_name):
                raise ValueError(
                    f"{keys_name.upper()} and {name.upper()} are both set: give the keys in one"
                )
            try:
                data = {**data, keys_name: read_key_file(str(path), cls.KEY_NAMES)}
            except ValueError as exc:
                raise ValueError(f"{name.upper()}: {exc}") from None
        return data

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return value

    @field_validator(
        "grpc_tls_cert_file",
        "grpc_tls_client_ca_file",
        "grpc_tls_ca_file",
        "grpc_tls_client_cert_file",
    )
    @classmethod
    def _certificates(cls, value: str, info: ValidationInfo) -> str:
        if value:
            leaf = info.field_name in ("grpc_tls_cert_file", "grpc_tls_client_cert_file")
            check_dates(read_certificates(value), value, leaf)
        return value

    @field_validator("grpc_tls_key_file", "grpc_tls_client_key_file")
    @classmethod
    def _private_key(cls, value: str) -> str:
        if value:
            read_private_key(value)
        return value

    @field_validator("*")
    @classmethod
    def _by_name(cls, value: object, info: ValidationInfo) -> object:
        """Every service's ``*_ADDR`` variables are HOST:PORT addresses, its ``*_TOPIC``
        variables Kafka topic names and its ``*_GROUP`` variables consumer group ids,
        whatever the service calls them."""
        if isinstance(value, str) and info.field_name is not None:
            if info.field_name.endswith("_addr"):
                return address_setting(value)
            if info.field_name.endswith("_topic"):
                return topic_setting(value)
            if info.field_name.endswith("_group"):
                return group_setting(value)
        return value

    @model_validator(mode="after")
    def _tracing(self) -> Self:
        """The OpenTelemetry variables Herald reads itself, checked with the rest (else
        only once connected to PostgreSQL and Kafka)."""
        if tracing_enabled():
            traces_exporter()
        return self

    @model_validator(mode="after")
    def _tls(self) -> Self:
        """The TLS files go together: a certificate with its key, a client CA or a
        client certificate only with what it completes."""
        for cert, key, name in (
            (self.grpc_tls_cert_file, self.grpc_tls_key_file, "GRPC_TLS"),
            (self.grpc_tls_client_cert_file, self.grpc_tls_client_key_file, "GRPC_TLS_CLIENT"),
        ):
            if bool(cert) != bool(key):
                raise ValueError(f"{name}_CERT_FILE and {name}_KEY_FILE: set both or neither")
            if cert and not check_pair(read_certificates(cert), read_private_key(key)):
                raise ValueError(
                    f"{name}_KEY_FILE: not the private key of {name}_CERT_FILE's certificate"
                )
        if self.grpc_tls_client_names and not self.grpc_tls_client_ca_file:
            raise ValueError(
                "GRPC_TLS_CLIENT_NAMES: needs GRPC_TLS_CLIENT_CA_FILE (names are read from "
                "the client certificates that mutual TLS asks for)"
            )
        if any(not n or any(c.isspace() for c in n) for n in self.client_names()):
            raise ValueError("GRPC_TLS_CLIENT_NAMES: names without white space, comma-separated")
        if self.grpc_tls_client_ca_file and not self.grpc_tls_cert_file:
            raise ValueError(
                "GRPC_TLS_CLIENT_CA_FILE: needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE "
                "(client certificates are asked for over TLS only)"
            )
        if self.grpc_tls_client_crl_file:
            if not self.grpc_tls_client_ca_file:
                raise ValueError(
                    "GRPC_TLS_CLIENT_CRL_FILE: needs GRPC_TLS_CLIENT_CA_FILE (it revokes "
                    "client certificates, which mutual TLS asks for)"
                )
            client_ca = read_certificates(self.grpc_tls_client_ca_file)
            try:
                read_revocations(self.grpc_tls_client_crl_file, client_ca)
            except ValueError as exc:
                raise ValueError(f"GRPC_TLS_CLIENT_CRL_FILE: {exc}") from None
        if self.grpc_tls_client_cert_file and not self.grpc_tls_ca_file:
            raise ValueError(
                "GRPC_TLS_CLIENT_CERT_FILE: needs GRPC_TLS_CA_FILE (it is presented over TLS only)"
            )
        return self

    def client_names(self) -> tuple[str, ...]:
        """GRPC_TLS_CLIENT_NAMES, split."""
        text = self.grpc_tls_client_names
        return tuple(dict.fromkeys(n.strip() for n in text.split(","))) if text.strip() else ()

    def server_tls(self) -> ServerTls | None:
        """The gRPC port's TLS; None: plaintext."""
        if not self.grpc_tls_cert_file:
            return None
        files = TlsFiles(
            self.grpc_tls_cert_file,
            self.grpc_tls_key_file,
            self.grpc_tls_client_ca_file or None,
            self.grpc_tls_reload_seconds,
            self.grpc_tls_client_crl_file or None,
        )
        return replace(read_server_tls(files), client_names=self.client_names())

    def client_tls(self) -> ClientTls | None:
        """TLS of calls to other Herald services; None: plaintext."""
        if not self.grpc_tls_ca_file:
            return None
        files = ClientTlsFiles(
            self.grpc_tls_ca_file,
            self.grpc_tls_client_cert_file or None,
            self.grpc_tls_client_key_file or None,
            self.grpc_tls_reload_seconds,
        )
        return read_client_tls(files)


S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Builds ``cls`` from the environment or exits naming each bad variable."""
    built, problems = _built(cls)
    _exit_if(problems)
    assert built is not None
    return built


def load_both(first: type[S], second: type[T]) -> tuple[S, T]:
    """Builds both (a service's settings and its Kafka settings) or exits naming every
    bad variable of both at once, not one class's in a first round, the other's next."""
    one, problems = _built(first)
    two, more = _built(second)
    _exit_if(problems + more)
    assert one is not None
    assert two is not None
    return one, two


def _built(cls: type[S]) -> tuple[S | None, list[str]]:
    """``cls`` from the environment, or the lines naming what is wrong with it."""
    try:
        return cls(), []
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                name = (prefix + ".".join(str(p) for p in error["loc"])).upper()
                lines.append(f"  {name}: {message}")
            else:  # a check across fields, whose message names them
                lines.append(f"  {message}")
        if issubclass(cls, RuntimeSettings) and all(e["loc"] for e in exc.errors()):
            # The fields failed, so the model's own checks did not run: run them here.
            lines += [f"  {problem}" for problem in _tracing_problems()]
        return None, lines
    except ValueError as exc:
        return None, [f"  {exc}"]


def _tracing_problems() -> list[str]:
    try:
        if tracing_enabled():
            traces_exporter()
    except ValueError as exc:
        return [str(exc)]
    return []


def _exit_if(problems: list[str]) -> None:
    if problems:
        sys.stderr.write("invalid configuration:\n" + "\n".join(problems) + "\n")
        raise SystemExit(2)


def address_setting(value: str) -> str:
    """Validates a HOST:PORT listen address (for ``*_ADDR`` variables)."""
    return _check_host_port(value)


def is_topic_name(name: str) -> bool:
    """Kafka's rule: 1 to 249 ASCII letters, digits, '.', '_' and '-'; not '.' or '..'."""
    return bool(_TOPIC_NAME.fullmatch(name)) and name not in (".", "..")


def topic_setting(value: str) -> str:
    """Validates a Kafka topic name (for ``*_TOPIC`` variables): Kafka refuses any
    other, and a record for such a topic would never be sent."""
    if not is_topic_name(value):
        raise ValueError(
            f"{value!r} is not a Kafka topic name: 1 to 249 ASCII letters, digits, "
            "'.', '_' and '-' (not '.' or '..')"
        )
    return value


def group_setting(value: str) -> str:
    """Validates a Kafka consumer group id (for ``*_GROUP`` variables): an empty one
    made the consumer fail to join for ever (logged as Kafka being unreachable)."""
    if not value or len(value) > 255 or not value.isprintable() or value != value.strip():
        raise ValueError(
            f"{value!r} is not a consumer group id: 1 to 255 printable characters, no spaces around"
        )
    return value


class StartError(SystemExit):
    """The service cannot start for a reason its operator must fix (a database it
    cannot reach, an address in use, a topic Kafka refuses to create).

    A SystemExit, as :func:`load_settings`'s exit: it passes the handlers of ordinary
    errors, and the process ends with its one-line message (no traceback), exit 1.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"cannot start: {message}")
        self.message = message
