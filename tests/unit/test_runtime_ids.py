"""uuid5_text gives exactly what the standard library's uuid5 gives."""

from __future__ import annotations

import uuid

import pytest

from herald.runtime.ids import uuid5_text


@pytest.mark.parametrize(
    "name", ["", "a", "urn:test\n0f5e2f3c\nroute-1\n0", "é" * 100, "\x00\n\t", "ключ/" * 40]
)
def test_the_same_as_the_standard_library(name: str) -> None:
    for namespace in (uuid.NAMESPACE_URL, uuid.UUID("6a1c3f0e-2b9d-4e57-8f14-3c0d9b7a5e21")):
        assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


def test_many_random_names() -> None:
    namespace = uuid.uuid4()
    for _ in range(500):
        name = uuid.uuid4().hex * 3
        assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))
