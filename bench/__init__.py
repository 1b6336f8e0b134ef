"""Herald's benchmarks: ``python -m bench`` (``make bench``).

Measures, in one run against the real local Kafka and PostgreSQL, the raw aiokafka
producer baseline and ingest's PublishBatch, unary Publish and accepted → on-Kafka
latency, prints them beside their baselines and targets, and saves JSON under
``bench/results/``.
"""
