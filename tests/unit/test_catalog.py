"""CreateEventType's rules for a definition, and definitions stored before a rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from herald.runtime.errors import FailedPrecondition, InvalidArgument
from herald.services.ingest import catalog, envelope, validation
from herald.services.ingest.catalog import EventTypeDef, check_definition
from herald.services.ingest.catalog_store import CatalogStore


def refused(schema: object) -> str:
    """The violation of a schema CreateEventType must refuse."""
    with pytest.raises(InvalidArgument) as exc:
        check_definition("order.created", "1.0", json.dumps(schema), "", [])
    [violation] = exc.value.violations
    assert violation.field == "event_type.json_schema"
    return violation.description


def test_a_ref_to_a_file_is_refused_not_read(tmp_path: Path) -> None:
    # the file was read: its schema's enum let a caller guess the file's content
    secret = tmp_path / "secret.json"
    secret.write_text('{"enum": ["s3cret"]}')
    schema = {"type": "object", "properties": {"x": {"$ref": secret.as_uri()}}}
    assert "$ref may only point inside the schema" in refused(schema)


def test_a_ref_to_a_url_is_refused_not_fetched() -> None:
    got = refused({"$ref": "http://127.0.0.1:9/s.json"})
    assert "$ref may only point inside the schema" in got
    assert "Retrieval is disabled" in got


def test_a_ref_inside_the_schema_is_resolved() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/n"}}}
    check_definition("order.created", "1.0", json.dumps(schema), "", [])
    definition = EventTypeDef("order.created", "1.0", json.dumps(schema))
    assert definition.validator.is_valid({"x": 1})
    assert not definition.validator.is_valid({"x": "1"})


def test_an_unknown_meta_schema_is_refused_not_fetched() -> None:
    # meta-validation fetched it, and a failed fetch answered INTERNAL
    got = refused({"$schema": "http://127.0.0.1:9/custom", "type": "object"})
    assert "$schema 'http://127.0.0.1:9/custom' is not a draft this service knows" in got


@pytest.mark.parametrize(
    "uri",
    [
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema#",
    ],
)
def test_the_official_drafts_are_accepted(uri: str) -> None:
    check_definition("order.created", "1.0", json.dumps({"$schema": uri}), "", [])


def test_a_declared_draft_is_the_one_data_is_validated_by() -> None:
    # draft-07's array form of items checks each position; 2020-12 has prefixItems
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "items": [{"type": "string"}],
        "additionalItems": False,
    }
    check_definition("order.created", "1.0", json.dumps(schema), "", [])
    validator = EventTypeDef("order.created", "1.0", json.dumps(schema)).validator
    assert validator.is_valid(["a"])
    assert not validator.is_valid([1])
    assert not validator.is_valid(["a", "b"])


def test_a_stored_definition_that_no_longer_compiles_is_unusable() -> None:
    # stored before refs were refused: the catalog could not load, ingest did not start
    definition = EventTypeDef("order.created", "1.0", '{"$ref": "http://127.0.0.1:9/s.json"}')
    assert "does not compile" in definition.unusable
    event, found = envelope.parse_json(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "urn:t",
                "type": "order.created",
                "time": "2025-01-01T00:00:00Z",
                "data": {},
            }
        )
    )
    with pytest.raises(FailedPrecondition, match=r"'order\.created' version '1\.0' cannot be used"):
        validation.validate(event, definition, [], found)


def test_a_schema_over_256_kib_and_a_description_over_2000_characters_are_refused() -> None:
    # a 1.5 MB description made every default ListEventTypes RESOURCE_EXHAUSTED
    schema = json.dumps({"description": "d" * 256 * 1024})
    with pytest.raises(InvalidArgument) as exc:
        check_definition("order.created", "1.0", schema, "", [], "d" * 2001)
    got = {v.field: v.description for v in exc.value.violations}
    assert got == {
        "event_type.json_schema": f"{len(schema)} bytes of JSON; at most 262144 (MAX_SCHEMA_BYTES)",
        "event_type.description": "2001 characters; at most 2000",
    }
    check_definition("order.created", "1.0", '{"type": "object"}', "", [], "d" * 2000)


def test_a_description_holding_a_nul_character_is_refused() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_definition("order.created", "1.0", "{}", "", [], "a\x00b")
    assert [v.field for v in exc.value.violations] == ["event_type.description"]


def event_from(source: str) -> envelope.Parsed:
    return envelope.parse_json(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": source,
                "type": "order.created",
                "time": "2025-01-01T00:00:00Z",
                "data": {},
            }
        )
    )


@pytest.mark.timeout(5)
def test_a_source_pattern_is_matched_in_linear_time() -> None:
    # Python's re backtracked: 27 characters against (a+)+b blocked the event loop for
    # seconds (64 would take centuries)
    check_definition("order.created", "1.0", "{}", "(a+)+b", [])
    definition = EventTypeDef("order.created", "1.0", "{}", source_pattern="(a+)+b")
    event, found = event_from("a" * 64)
    with pytest.raises(InvalidArgument) as exc:
        validation.validate(event, definition, [], found)
    assert "does not match '(a+)+b'" in exc.value.violations[0].description
    matching, found = event_from("a" * 64 + "b")
    validation.validate(matching, definition, [], found)


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)a", "(?<!b)a", "(["])
def test_a_source_pattern_re2_cannot_compile_is_refused(pattern: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_definition("order.created", "1.0", "{}", pattern, [])
    [violation] = exc.value.violations
    assert violation.field == "event_type.source_pattern"
    assert violation.description.startswith("not a regular expression RE2 accepts")
    # stored before RE2: unusable, not fatal
    stored = EventTypeDef("order.created", "1.0", "{}", source_pattern=pattern)
    assert "source_pattern does not compile" in stored.unusable


@pytest.mark.parametrize("version", ["1.00", "01.0", "1.01", "007", "1.0.0.0", "1.", ".1"])
def test_a_data_version_with_leading_zeros_or_too_many_parts_is_refused(version: str) -> None:
    """1.0, 1.00 and 01.0 registered as three versions of one type, the latest being
    whichever was inserted last."""
    with pytest.raises(InvalidArgument) as exc:
        check_definition("order.created", version, '{"type": "object"}', "", [])
    assert [v.field for v in exc.value.violations] == ["event_type.data_version"]


@pytest.mark.parametrize("version", ["1.0", "0.1", "10.2.3", "2", "1.10"])
def test_a_data_version_of_plain_numbers_is_accepted(version: str) -> None:
    check_definition("order.created", version, '{"type": "object"}', "", [])


def test_a_definition_compiles_once_and_only_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # ListEventTypes builds a definition per listed row: compiling each (and its RE2
    # pattern) only to list it cost a schema compile per row.
    compiled: list[object] = []
    real = catalog.compile_schema

    def counting(schema: dict[str, object]) -> object:
        compiled.append(schema)
        return real(schema)

    monkeypatch.setattr(catalog, "compile_schema", counting)
    schema = '{"type": "object"}'
    definition = EventTypeDef("order.created", "1.0", schema, source_pattern="urn:.*")
    assert compiled == []
    assert definition.unusable == ""
    assert definition.source_matches("urn:shop")
    assert not definition.source_matches("http:x")
    assert definition.validator.is_valid({})
    assert not definition.validator.is_valid([])
    assert len(compiled) == 1


def compiled_now(definition: EventTypeDef) -> bool:
    return definition._validator is not None


def test_compiled_validators_stay_within_their_budget_least_recently_used_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 versions of 64 KiB held ~1.4 GB compiled in every ingest process."""

    def definition(version: str) -> EventTypeDef:
        schema = {"type": "object", "properties": {f"f{n}": {"maxLength": n} for n in range(60)}}
        return EventTypeDef("order.created", version, json.dumps(schema))

    size = len(definition("1.0").schema_text)
    compiled = catalog.CompiledValidators(budget=size * 2)
    monkeypatch.setattr(catalog, "COMPILED", compiled)
    one, two, three = definition("1.0"), definition("2.0"), definition("3.0")
    assert not one.unusable  # compiled at load, as the store does
    assert not two.unusable
    assert one.validator.is_valid({"f1": "x"})  # used: two is now the oldest
    assert not three.unusable
    assert (len(compiled), compiled.held_bytes) == (2, 2 * size)
    assert [compiled_now(d) for d in (one, two, three)] == [True, False, True], (
        "the least recently used dropped its validator"
    )
    assert not two.validator.is_valid({"f1": "xx"}), "compiled again when used"
    assert [compiled_now(d) for d in (one, two, three)] == [False, True, True]
    assert not two.unusable, "a dropped validator is not an unusable definition"


def test_a_refresh_keeps_the_definitions_it_holds_compiled() -> None:
    """A refresh (a version not known here, a NOTIFY) read every version of the name
    again and compiled each: the validators in use were pushed out of the budget."""
    schema = '{"type": "object"}'
    held = catalog.Catalog([EventTypeDef("order.created", "1.0", schema)])
    kept = held.get("order.created", "1.0")
    assert kept is not None
    assert not kept.unusable
    CatalogStore._add(held, EventTypeDef("order.created", "1.0", "".join(schema)))
    CatalogStore._add(held, EventTypeDef("order.created", "2.0", schema))
    assert held.get("order.created", "1.0") is kept
    assert held.versions("order.created") == ["1.0", "2.0"]
