"""runtime.json_fast.loads gives what json.loads gives, for every kind of input; dumps
writes text that reads back as the value json.dumps writes."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from herald.runtime.json_fast import dumps, loads

DOCUMENTS: list[bytes | str] = [
    b'{"user_id": "u1", "locale": "ru", "channels": ["push", "email"]}',
    '{"title": "Матрица", "n": -0.0, "x": 1e-7, "big": 18446744073709551615}',
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins
    b"123456789012345678901234567890",  # beyond 64 bits: exact, not a float
    b"[-9594285293078424535, 18446744073709551615]",  # just outside / inside
    b'{"amount": 12345678901234567890123}',
    b'{"card": "12345678901234567890123"}',  # a long run of digits in a string
    b"\xef\xbb\xbf{}",  # a byte order mark
    '{"k": "v"}'.encode("utf-16"),
    b'"\\ud83d\\ude00 \\u00e9"',
    b"null",
    b"  [1, 2.5, true, false, null, {}, []]  ",
    b'{"deep": ' + b"[" * 200 + b"]" * 200 + b"}",
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_result_is_json_loads_result(document: bytes | str) -> None:
    assert _same(loads(document), json.loads(document))


@pytest.mark.parametrize(
    "document",
    [
        b"[NaN]",
        b'{"amount": Infinity}',
        b"[-Infinity]",
        b"1e400",
        '{"x": -1e400}',
        b"[1" + b"0" * 5000 + b"]",
        b'{"x": 1' + b"0" * 5000 + b"}",
    ],
)
def test_what_is_not_json_or_cannot_be_written_back_is_a_decode_error(
    document: bytes | str,
) -> None:
    # json accepts NaN/Infinity and makes 1e400 infinity, which json.dumps then writes as
    # Infinity: events with these were accepted and went to Kafka and webhook receivers
    # as invalid JSON; an integer of 5,000 digits raised a ValueError that reached
    # clients as INTERNAL
    with pytest.raises(json.JSONDecodeError):
        loads(document)


def test_random_documents_round_trip_as_json_reads_them() -> None:
    rng = random.Random(5)

    def value(depth: int) -> Any:
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.randrange(-(10**25), 10**25) // rng.choice([1, 10**6, 10**12])
        if kind == 2:
            return rng.uniform(-1e9, 1e9)
        if kind == 3:
            return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(6)))
        if kind == 4:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(2000):
        text = json.dumps(value(0), ensure_ascii=rng.random() < 0.5)
        assert _same(loads(text), json.loads(text))
        assert _same(loads(text.encode()), json.loads(text.encode()))


@pytest.mark.parametrize("document", [b"{", b'{"a": }', b"", b"\xff\xfe\x00", "[1,]"])
def test_what_json_refuses_is_refused_with_its_error(document: bytes | str) -> None:
    try:
        json.loads(document)
    except ValueError as exc:
        refused: type[ValueError] = type(exc)
    else:
        pytest.fail("json accepts it")
    with pytest.raises(refused):
        loads(document)


@pytest.mark.parametrize(
    "value",
    [
        [["ce_id", "8a65f0c1"], ["traceparent", "00-4bf9-adc4-01"]],
        {"title": "Матрица", "emoji": "😀", "n": -0.0, "x": 1e-7, "u64": 18446744073709551615},
        {"lone": "\ud800"},  # a lone surrogate: orjson refuses it, json writes it
        {"big": 12345678901234567890123},  # beyond 64 bits
        {1: "not-a-str-key"},
    ],
)
def test_dumps_reads_back_as_json_dumps_does(value: Any) -> None:
    text = dumps(value)
    assert " " not in text.replace("Матрица", "")  # compact
    assert _same(json.loads(text), json.loads(json.dumps(value)))


@pytest.mark.parametrize(
    "document", ["[" * 100_000 + "]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000]
)
def test_a_document_nested_too_deeply_is_a_decode_error(document: bytes | str) -> None:
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        loads(document)
