"""runtime.murmur2 places every key where aiokafka's default partitioner does. No I/O."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from herald.runtime import murmur2 as murmur2_module
from herald.runtime.murmur2 import murmur2, partition_of


def test_the_hash_is_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(70) for _ in range(40)]
    keys += [b"", b"\x00", b"\xff" * 9, "ключ-заказа".encode(), b"user-123"]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_partitions_are_the_default_partitioners() -> None:
    rng = random.Random(11)
    default = DefaultPartitioner()
    for count in (1, 3, 6, 7, 64):
        partitions = list(range(count))
        for _ in range(300):
            key = rng.randbytes(rng.randrange(1, 40))
            assert partition_of(key, partitions) == default(key, partitions, partitions)


def test_remembered_keys_are_placed_the_same_and_the_memory_is_bounded() -> None:
    rng = random.Random(13)
    default = DefaultPartitioner()
    keys = [rng.randbytes(rng.randrange(1, 40)) for _ in range(200)]
    for partitions in ([0, 1, 2, 3, 4, 5], [0, 1, 2], list(range(64))):
        for _ in range(3):  # first computed, then remembered: the same answer
            for key in keys:
                assert partition_of(key, partitions) == default(key, partitions, partitions)
    for i in range(murmur2_module.KNOWN_KEYS_MAX + 10):
        partition_of(i.to_bytes(4, "big"), [0, 1])
    assert len(murmur2_module._KNOWN) <= murmur2_module.KNOWN_KEYS_MAX
