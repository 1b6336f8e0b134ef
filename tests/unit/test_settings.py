"""Each service's settings: a wrong value stops the start with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from herald.runtime.auth import parse_key_methods
from herald.runtime.key_pairs import parse_api_keys
from herald.runtime.settings import load_settings
from herald.services.dispatch.retry import Schedule
from herald.services.dispatch.settings import DispatchSettings
from herald.services.ingest.settings import IngestRelaySettings, IngestSettings
from herald.services.reconcile.settings import ReconcileSettings
from herald.services.webhooks.app import delivery_client
from herald.services.webhooks.settings import WebhooksSettings
from tests.settings_env import KEY, refused, set_required

SERVICES: list[type[BaseSettings]] = [
    IngestSettings,
    IngestRelaySettings,
    DispatchSettings,
    WebhooksSettings,
    ReconcileSettings,
]


@pytest.fixture(autouse=True)
def required(monkeypatch: pytest.MonkeyPatch) -> None:
    set_required(monkeypatch)


def fields(cls: type[BaseSettings], *types: type) -> list[str]:
    """The environment variables of ``cls`` whose values are of ``types``."""
    return [n.upper() for n, f in cls.model_fields.items() if f.annotation in types]


# Settings checked by their name's suffix (RuntimeSettings._by_name): how many the four
# services have, values refused (and the message naming the value), values taken.
# An unchecked topic was accepted: events were stored for it and never sent.
NAMED = {
    "_TOPIC": (
        15,  # ingest 2, ingest_relay 1, dispatch 3, webhooks 2, reconcile 7
        ["", "bad%topic", ".", "..", "x" * 250, "événements", "a b", "a\n", "a/b"],
        "{value!r} is not a Kafka topic name",
        ["x" * 249, "A.b_c-9", "..."],
    ),
    "_ADDR": (
        14,  # ingest 2, ingest_relay 2, dispatch 4, webhooks 3, reconcile 3
        # A URL passed as host "http://x": dispatch then failed every call for ever.
        ["", "localhost", ":50051", "host:", "host:http", "h:65536", "http://x:1", "a b:1"],
        "expected HOST:PORT (no scheme), got {value!r}",
        ["127.0.0.1:0", "[::1]:50051", "herald-ingest:65535", "[::]:1", "0.0.0.0:50051"],
    ),
    "_GROUP": (
        3,  # dispatch 1, webhooks 1, reconcile 1
        # An empty group was taken: the consumer never joined, logged as Kafka away.
        ["", " ", " herald", "a\tb", "x" * 256],
        "{value!r} is not a consumer group id",
        ["herald-webhooks", "x" * 255, "team.a/b:c", "группа"],
    ),
}


def named_settings(suffix: str) -> list[tuple[type[BaseSettings], str]]:
    found = [(cls, n) for cls in SERVICES for n in fields(cls, str) if n.endswith(suffix)]
    assert len(found) == NAMED[suffix][0]
    return found


@pytest.mark.parametrize(
    ("cls", "name", "value", "message"),
    [
        (cls, name, value, message.format(value=value))
        for suffix, (_, bad, message, _) in NAMED.items()
        for cls, name in named_settings(suffix)
        for value in bad
    ],
)
def test_a_named_setting_refuses_what_its_kind_cannot_be(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cls: type[BaseSettings],
    name: str,
    value: str,
    message: str,
) -> None:
    err = refused(monkeypatch, capsys, cls, **{name: value})
    assert f"{name}: {message}" in err


@pytest.mark.parametrize(
    ("cls", "name", "good"),
    [
        (cls, name, good)
        for suffix, (_, _, _, good) in NAMED.items()
        for cls, name in named_settings(suffix)
    ],
)
def test_a_named_setting_takes_any_value_of_its_kind(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], name: str, good: list[str]
) -> None:
    for value in good:
        monkeypatch.setenv(name, value)
        assert getattr(load_settings(cls), name.lower()) == value


def numeric_settings() -> list[tuple[type[BaseSettings], str]]:
    return [(cls, n) for cls in SERVICES for n in fields(cls, int, float)]


@pytest.mark.parametrize(("cls", "name"), numeric_settings())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "1000000000000"])
def test_no_number_setting_takes_infinity_nan_or_an_absurd_value(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cls: type[BaseSettings],
    name: str,
    value: str,
) -> None:
    # inf or 1e12 hours were accepted: then every keyed Publish, every purge, the
    # webhooks engine (OverflowError) or dispatch's producer failed at run time.
    err = refused(monkeypatch, capsys, cls, **{name: value})
    assert f"  {name}: " in err


@pytest.mark.parametrize(
    ("cls", "name", "most"),
    [
        (IngestSettings, "IDEMPOTENCY_TTL_HOURS", "87600"),  # 10 years
        (IngestSettings, "OUTBOX_RETENTION_HOURS", "87600"),
        (IngestSettings, "EVENT_RETENTION_DAYS", "3650"),
        (IngestSettings, "EVENTS_TOPIC_PARTITIONS", "1000"),
        (WebhooksSettings, "DELIVERY_RETENTION_DAYS", "3650"),
        (WebhooksSettings, "DISABLE_AFTER_SECONDS", "315360000"),
        (DispatchSettings, "SEND_TIMEOUT_SECONDS", "3600"),
        (DispatchSettings, "SHUTDOWN_GRACE_SECONDS", "3600"),
        (ReconcileSettings, "PARK_LIMIT_SECONDS", "31536000"),  # a year
    ],
)
def test_number_settings_go_up_to_their_documented_bound(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cls: type[BaseSettings],
    name: str,
    most: str,
) -> None:
    monkeypatch.setenv(name, most)
    assert getattr(load_settings(cls), name.lower()) == float(most)
    assert name in refused(monkeypatch, capsys, cls, **{name: str(float(most) * 1.01)})


@pytest.mark.parametrize("schedule", ["nan", "inf", "5m,1e400s", "99999999d", "366d", "-1s"])
def test_retry_schedule_delays_are_finite_and_at_most_a_year(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], schedule: str
) -> None:
    err = refused(monkeypatch, capsys, DispatchSettings, RETRY_SCHEDULE=schedule)
    assert "RETRY_SCHEDULE:" in err
    assert Schedule.parse("0s,30m,365d").delays == (0, 1800, 365 * 86400)


def test_notification_channels_are_channel_names_and_make_their_topics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFICATION_CHANNELS", " email, sms_2,,")
    assert load_settings(DispatchSettings).notification_topics() == [
        "herald.notifications.email",
        "herald.notifications.sms_2",
    ]
    for wrong in ("email,a%b", "a.b", "x" * 65):
        err = refused(monkeypatch, capsys, DispatchSettings, NOTIFICATION_CHANNELS=wrong)
        assert "NOTIFICATION_CHANNELS:" in err
        assert "is not a channel name" in err


@pytest.mark.parametrize("cls", [DispatchSettings, WebhooksSettings])
def test_the_internal_key_follows_the_same_rule_in_dispatch_and_webhooks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cls: type[BaseSettings]
) -> None:
    # dispatch took a key webhooks refuses: each of its calls was then refused
    for wrong in ("short", f" {KEY}"):
        err = refused(monkeypatch, capsys, cls, WEBHOOKS_INTERNAL_KEY=wrong)
        assert "WEBHOOKS_INTERNAL_KEY: 16+ characters" in err
    for right in ("", "i" * 16):  # not a tenant key: see the next test
        monkeypatch.setenv("WEBHOOKS_INTERNAL_KEY", right)
        assert load_settings(cls).model_dump()["webhooks_internal_key"] == right


def test_the_internal_key_is_no_tenant_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # it was taken: tenant acme's key then opened SubscriptionService (every tenant's
    # webhooks) and dispatch's key acted as acme on WebhookService
    internal = "i" * 16
    err = refused(
        monkeypatch,
        capsys,
        WebhooksSettings,
        WEBHOOKS_API_KEYS=f"{KEY}=globex, {internal} =acme",
        WEBHOOKS_INTERNAL_KEY=internal,
    )
    assert "WEBHOOKS_INTERNAL_KEY must differ from every key of WEBHOOKS_API_KEYS" in err
    assert "'acme'" in err
    assert internal not in err, "the key itself is never echoed"
    monkeypatch.setenv("WEBHOOKS_INTERNAL_KEY", internal + "x")
    assert load_settings(WebhooksSettings).webhooks_internal_key == internal + "x"


@pytest.mark.parametrize("prefix", ["", "X_Katya", "X-", "-X", "X--Katya", "X Katya", "webhook"])
def test_the_header_prefix_names_headers_and_leaves_standard_webhooks_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    err = refused(monkeypatch, capsys, WebhooksSettings, WEBHOOKS_HEADER_PREFIX=prefix)
    assert "WEBHOOKS_HEADER_PREFIX" in err
    monkeypatch.setenv("WEBHOOKS_HEADER_PREFIX", "X-Katya")
    monkeypatch.setenv("WEBHOOKS_USER_AGENT", "Katya-Webhooks/1.0")
    settings = load_settings(WebhooksSettings)
    assert (settings.webhooks_header_prefix, settings.webhooks_user_agent) == (
        "X-Katya",
        "Katya-Webhooks/1.0",
    )


@pytest.mark.parametrize("agent", ["", " Katya/1.0", "Katya/1.0 ", "Katya\n/1.0", "Катя/1.0"])
def test_the_user_agent_is_printable_ascii(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], agent: str
) -> None:
    err = refused(monkeypatch, capsys, WebhooksSettings, WEBHOOKS_USER_AGENT=agent)
    assert "WEBHOOKS_USER_AGENT" in err


def test_an_api_key_given_twice_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The later tenant won, silently
    err = refused(monkeypatch, capsys, WebhooksSettings, WEBHOOKS_API_KEYS=f"{KEY}=a, {KEY} =b")
    assert "WEBHOOKS_API_KEYS: entry 2: its key is given twice" in err
    assert KEY not in err
    assert parse_api_keys(f"{KEY}=a,{KEY}x=b") == {KEY: "a", f"{KEY}x": "b"}


def test_a_key_may_end_in_base64_padding_and_a_name_may_hold_an_equals_sign() -> None:
    """``openssl rand -base64 32`` ends in ``=``; a tenant name written before keys
    could end so may hold one: each pair splits at the last ``=`` of its first run."""
    padded = "k" * 42 + "="
    assert parse_api_keys(f"{padded}=acme,{KEY}=team=a") == {padded: "acme", KEY: "team=a"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not json", "not JSON: Expecting value"),
        (b"[" * 100_000, "not JSON: maximum recursion depth"),
        (b"\xff[]", "can't decode byte 0xff"),
        (b"{}", "expected a JSON list of routes"),
        (b"[1]", "route 0: expected a JSON object"),
        (b'[{"name": "a", "nope": 1}]', 'route 0: Message type "herald.dispatch.v1.Route"'),
        (b'[{"name": ""}]', "[0].name: required"),
        (
            b'[{"name": "a", "target": {"channel": "email", "templateCode": "t"}},'
            b' {"name": "a", "target": {"channel": "sms", "templateCode": "t"}}]',
            "[1].name: 'a' is given twice",
        ),
        (  # dispatch's own topic: each job consumed as the event again, for ever
            b'[{"name": "a", "target": {"channel": "sms", "templateCode": "t",'
            b' "topic": "herald.events"}}]',
            "[0].target.topic: herald.events is one of dispatch's own topics",
        ),
    ],
)
def test_a_bad_routes_file_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: bytes,
    reason: str,
) -> None:
    # It crashed dispatch with a traceback once connected to the database
    path = tmp_path / "routes.json"
    path.write_bytes(content)
    err = refused(monkeypatch, capsys, DispatchSettings, ROUTES_FILE=str(path))
    assert f"ROUTES_FILE: {path}: " in err
    assert reason in err


def test_a_routes_file_that_cannot_be_read_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = refused(monkeypatch, capsys, DispatchSettings, ROUTES_FILE=str(tmp_path / "none"))
    assert "ROUTES_FILE: " in err
    assert "cannot read it: No such file or directory" in err
    good = tmp_path / "routes.json"
    good.write_text('[{"name": "a", "target": {"channel": "email", "templateCode": "t"}}]')
    monkeypatch.setenv("ROUTES_FILE", str(good))
    assert load_settings(DispatchSettings).routes_file == good


def test_reconcile_inputs_are_three_different_topics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Records are told apart by their topic: orders read as events otherwise
    err = refused(
        monkeypatch, capsys, ReconcileSettings, TICKETLAND_ORDERS_TOPIC="ticketland.events"
    )
    assert "TICKETLAND_EVENTS_TOPIC, TICKETLAND_ORDERS_TOPIC, TICKETLAND_REFUNDS_TOPIC" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"VIBE_ORDERS_TOPIC": "ticketland.orders"},
            "VIBE_ORDERS_TOPIC (ticketland.orders) must not be an input topic "
            "(TICKETLAND_ORDERS_TOPIC)",
        ),
        (
            {"VIBE_REFUNDS_TOPIC": "x", "TICKETLAND_EVENTS_TOPIC": "x"},
            "VIBE_REFUNDS_TOPIC (x) must not be an input topic (TICKETLAND_EVENTS_TOPIC)",
        ),
        (
            {"DLQ_TOPIC": "ticketland.refunds"},
            "DLQ_TOPIC (ticketland.refunds) must not be an input topic",
        ),
        (
            {"VIBE_EVENTS_TOPIC": "vibe.orders"},
            "VIBE_EVENTS_TOPIC, VIBE_ORDERS_TOPIC, VIBE_REFUNDS_TOPIC must be three different",
        ),
        ({"VIBE_SCHEMA_VERSION": ""}, "VIBE_SCHEMA_VERSION: "),
        ({"VIBE_APPLICATION_ID": " "}, "VIBE_APPLICATION_ID: "),
    ],
)
def test_reconcile_outputs_are_apart_from_its_inputs_and_headers_carry_a_value(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    # An output on an input topic: reconcile read its own records as Ticketland's
    err = refused(monkeypatch, capsys, ReconcileSettings, **env)
    assert message in err


def test_reconcile_ledger_transactions_leave_room_in_the_pool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        monkeypatch, capsys, ReconcileSettings, LEDGER_CONCURRENCY="4", DATABASE_POOL_SIZE="4"
    )
    assert "LEDGER_CONCURRENCY (4) must be below DATABASE_POOL_SIZE (4)" in err
    monkeypatch.setenv("DATABASE_POOL_SIZE", "5")
    assert load_settings(ReconcileSettings).ledger_concurrency == 4


@pytest.mark.parametrize("cls", SERVICES)
def test_the_opentelemetry_variables_herald_reads_are_checked_with_the_rest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cls: type[BaseSettings]
) -> None:
    # OTEL_SDK_DISABLED=maybe was taken for false, silently
    err = refused(monkeypatch, capsys, cls, OTEL_SDK_DISABLED="maybe")
    assert "\n  OTEL_SDK_DISABLED='maybe' is not supported: use true or false\n" in err
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")  # not read when disabled
    load_settings(cls)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    assert "OTEL_TRACES_EXPORTER='otlp'" in refused(monkeypatch, capsys, cls)


@pytest.mark.parametrize(
    ("cls", "prefix", "method"),
    [
        (IngestSettings, "INGEST", "Publish"),
        (DispatchSettings, "DISPATCH", "RedriveDeadLetters"),
        (ReconcileSettings, "RECONCILE", "ResolveDiscrepancy"),
    ],
)
def test_key_methods_name_callers_of_the_keys_and_methods_of_the_service(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cls: type[BaseSettings],
    prefix: str,
    method: str,
) -> None:
    """A misspelt caller or method, taken, would restrict nobody or lock a caller out."""
    variable = f"{prefix}_API_KEY_METHODS"
    err = refused(monkeypatch, capsys, cls, **{variable: f"ops={method}"})
    nobody = "is set while the service has no API keys (nor GRPC_TLS_CLIENT_NAMES)"
    assert f"{variable}: {nobody}" in err
    monkeypatch.setenv(f"{prefix}_API_KEYS", f"{KEY}=ops,{KEY}x=team=b")
    for wrong, message in [
        (f"opz={method}", "entry 1: no API key is named 'opz'"),
        # A key where its name belongs: not echoed into the logs of a failed start.
        (f"{KEY}={method}", "entry 1: names an API key itself, not its NAME (not shown)"),
        (f"ops={method}|Nope", "entry 1: no method Nope; the service has "),
        (f"ops={method}, ops={method}", "entry 2: caller 'ops' is given twice"),
        ("ops=", "entry 1: expected NAME=Method|Method|…"),
        (method, "entry 1: expected NAME=Method|Method|…"),
        ("IngestService/Publish", "entry 1: expected NAME=Method|Method|…"),
    ]:
        err = refused(monkeypatch, capsys, cls, **{variable: wrong})
        assert f"{variable}: {message}" in err, err
        assert KEY not in err
    monkeypatch.setenv(variable, f" team=b = {method} | {method} ,ops={method}")
    settings = load_settings(cls)
    assert getattr(settings, variable.lower()) == f" team=b = {method} | {method} ,ops={method}"
    assert parse_key_methods(
        f" team=b = {method} | {method} ,ops={method}", {"ops", "team=b"}, {method, "Other"}
    ) == {"team=b": frozenset({method}), "ops": frozenset({method})}
    assert parse_key_methods(f"*={method},ops=Other", {"ops"}, {method, "Other"}) == {
        "*": frozenset({method}),
        "ops": frozenset({"Other"}),
    }, "'*': every caller not named"


def test_event_type_limits_name_callers_of_the_keys_and_patterns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_EVENT_TYPES="ops=x.*")
    assert "INGEST_API_KEY_EVENT_TYPES: is set while the service has no API keys" in err
    monkeypatch.setenv("INGEST_API_KEYS", f"{KEY}=ops")
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_EVENT_TYPES="opz=x.*")
    assert "INGEST_API_KEY_EVENT_TYPES: entry 1: no API key is named 'opz'" in err
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_EVENT_TYPES="ops=X")
    assert "INGEST_API_KEY_EVENT_TYPES: entry 1: 'X' is not an event type" in err
    assert KEY not in err
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_EVENT_TYPES=f"{KEY}=x.*")
    assert "INGEST_API_KEY_EVENT_TYPES: entry 1: names an API key itself, not its NAME" in err
    assert KEY not in err
    monkeypatch.setenv("INGEST_API_KEY_EVENT_TYPES", "ops=x.*|y")
    assert load_settings(IngestSettings).ingest_api_key_event_types == "ops=x.*|y"


def test_source_limits_name_callers_of_the_keys_and_patterns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_SOURCES="ops=urn:x")
    assert "INGEST_API_KEY_SOURCES: is set while the service has no API keys" in err
    monkeypatch.setenv("INGEST_API_KEYS", f"{KEY}=ops")
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_SOURCES="ops=urn:*:x")
    assert "INGEST_API_KEY_SOURCES: entry 1: 'urn:*:x': '*' may only end" in err
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_SOURCES=f"{KEY}=urn:x")
    assert "INGEST_API_KEY_SOURCES: entry 1: names an API key itself, not its NAME" in err
    assert KEY not in err
    monkeypatch.setenv("INGEST_API_KEY_SOURCES", "ops=urn:ops:*|/ops")
    assert load_settings(IngestSettings).ingest_api_key_sources == "ops=urn:ops:*|/ops"


def test_every_wrong_ingest_limit_is_named_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        monkeypatch,
        capsys,
        IngestSettings,
        INGEST_API_KEYS=f"{KEY}=ops",
        INGEST_API_KEY_METHODS="ops=Publsh",
        INGEST_API_KEY_EVENT_TYPES="opz=x.*",
        INGEST_API_KEY_SOURCES="ops=a b",
        INGEST_API_KEY_APPLICATION_IDS="ops=a*b",
    )
    assert "INGEST_API_KEY_METHODS: entry 1: no method Publsh" in err
    assert "INGEST_API_KEY_EVENT_TYPES: entry 1: no API key is named 'opz'" in err
    assert "INGEST_API_KEY_SOURCES: entry 1: 'a b' holds white space" in err
    assert "INGEST_API_KEY_APPLICATION_IDS: entry 1: 'a*b': '*' may only end" in err


@pytest.mark.parametrize(
    ("cls", "service"),
    [
        (IngestSettings, "INGEST"),
        (DispatchSettings, "DISPATCH"),
        (ReconcileSettings, "RECONCILE"),
        (WebhooksSettings, "WEBHOOKS"),
    ],
)
def test_a_keys_file_gives_the_keys_and_a_bad_one_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cls: type[BaseSettings],
    service: str,
) -> None:
    keys, path = f"{service}_API_KEYS", tmp_path / "keys"
    monkeypatch.delenv(keys, raising=False)
    path.write_text(f"# ops\n{KEY}=ops  # rotated 2026-11\n\n {KEY}x = team , \n")
    monkeypatch.setenv(f"{keys}_FILE", str(path))
    assert parse_api_keys(getattr(load_settings(cls), keys.lower())) == {
        KEY: "ops",
        f"{KEY}x": "team",
    }
    err = refused(monkeypatch, capsys, cls, **{keys: f"{KEY}=ops"})
    assert f"{keys} and {keys}_FILE are both set: give the keys in one" in err
    monkeypatch.delenv(keys)
    path.write_text("short=ops\n")
    err = refused(monkeypatch, capsys, cls)
    assert f"{keys}_FILE: entry 1: expected KEY=" in err
    path.write_text(f"# {KEY}=ops\n")
    err = refused(monkeypatch, capsys, cls)
    assert f"{keys}_FILE: {path} holds no KEY=" in err
    assert KEY not in err.replace(str(path), "")
    err = refused(monkeypatch, capsys, cls, **{f"{keys}_FILE": str(tmp_path / "none")})
    assert f"{keys}_FILE: cannot read {tmp_path / 'none'}: [Errno 2]" in err


def test_a_keys_file_counts_as_the_keys_for_the_limits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY}=ops\n")
    monkeypatch.setenv("INGEST_API_KEYS_FILE", str(path))
    monkeypatch.setenv("INGEST_API_KEY_METHODS", "ops=Publish")
    monkeypatch.setenv("INGEST_API_KEY_SOURCES", "ops=urn:ops:*")
    assert load_settings(IngestSettings).callers() == {"ops"}
    err = refused(monkeypatch, capsys, IngestSettings, INGEST_API_KEY_METHODS="opz=Publish")
    assert "INGEST_API_KEY_METHODS: entry 1: no API key is named 'opz'" in err
    internal = "i" * 16
    path.write_text(f"{internal}=acme\n")
    err = refused(
        monkeypatch,
        capsys,
        WebhooksSettings,
        WEBHOOKS_API_KEYS="",
        WEBHOOKS_API_KEYS_FILE=str(path),
        WEBHOOKS_INTERNAL_KEY=internal,
    )
    assert "WEBHOOKS_INTERNAL_KEY must differ from every key of WEBHOOKS_API_KEYS" in err


@pytest.mark.parametrize("concurrency", [64, 2000])
def test_the_delivery_client_has_a_connection_for_every_attempt_in_flight(
    monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    # DELIVERY_CONCURRENCY up to 2,000 shared 500 connections: attempts waited for one
    # within their timeout, and healthy endpoints timed out
    monkeypatch.setenv("DELIVERY_CONCURRENCY", str(concurrency))
    client = delivery_client(load_settings(WebhooksSettings))
    assert client.max_connections >= concurrency
