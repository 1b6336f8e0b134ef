"""``python -m bench``: run the benchmarks, print the table, save the JSON.

Scenarios (all in one run, each ingest one on a fresh database and topic):

- a: raw aiokafka producer baseline (records/s);
- b: PublishBatch end to end, first call → last record on Kafka (events/s), >= 50 % of a;
- c: unary Publish from 64 concurrent callers (events/s, latency), >= 3,000 events/s;
- d: accepted → on Kafka latency at a steady 1,000 events/s, p99 <= 50 ms;
- 0: d's floor, the same measurement with a raw producer instead of ingest;
- w: webhook deliveries beside a raw HTTP POST loop (bench/webhooks.py);
- x: dispatch fan-out to 1, 10, 100 routes beside a raw consume→produce loop;
- r: reconcile, orders and refunds to Vibeapp's topics beside a raw consume→produce loop.

Ingest runs as deployed by ``make run``: its own process (``python -m
herald.services.ingest``) with its outbox relay in another
(``herald.services.ingest_relay``). ``--set NAME=VALUE`` passes settings to both
(e.g. ``--set WRITER_COMMITTERS=4``; ``RELAY_ENABLED=true``: the relay inside ingest)
and ``--profile DIR`` runs ingest under pyinstrument. Everyone's tests share this machine:
the JSON keeps the CPU used by ingest, the client, Kafka, PostgreSQL and any other
process beside each scenario, so a run skewed by others shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    batch,
    dispatch,
    floor,
    grpc_floor,
    infra,
    raw_kafka,
    reconcile,
    report,
    steady,
    unary,
    webhooks,
)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        default="abcgd0wxr",
        help="scenarios, e.g. 'ab' (abcgd0wxr; g: c's gRPC floor, 0: d's floor, "
        "w: webhooks, x: dispatch, r: reconcile)",
    )
    parser.add_argument("--raw-n", type=int, default=40_000, help="records for a (40000)")
    parser.add_argument("--raw-repeats", type=int, default=2, help="runs per raw pattern (2)")
    parser.add_argument("--batch-n", type=int, default=40_000, help="events for b (40000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per call (1000)")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="calls in flight (4)")
    parser.add_argument("--unary-n", type=int, default=20_000, help="events for c (20000)")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers in c (64)")
    parser.add_argument("--rate", type=float, default=1000, help="events/s in d (1000)")
    parser.add_argument("--seconds", type=float, default=10, help="duration of d (10)")
    parser.add_argument(
        "--floor-seconds", type=float, default=4, help="duration of d's floor, 0 (4)"
    )
    parser.add_argument(
        "--webhook-n",
        type=int,
        default=webhooks.RAW_MIN,
        help=f"deliveries per case in w ({webhooks.RAW_MIN}, as many as the raw loop sends)",
    )
    parser.add_argument("--partitions", type=int, default=6, help="topic partitions (6)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the ingest process, e.g. WRITER_COMMITTERS=4",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run ingest under pyinstrument (pip install it first; investigation only) "
        "and save DIR/<scenario>.pyisession",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def _ingest_env(args: argparse.Namespace) -> dict[str, str]:
    """Extra environment of the ingest processes (--set, --profile)."""
    env = dict(item.split("=", 1) for item in args.set)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE"] = str(Path(args.profile).resolve())
    return env


async def _scenarios(args: argparse.Namespace, where: infra.Infra) -> dict[str, Any]:
    env = _ingest_env(args)
    results: dict[str, Any] = {}
    steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "a": lambda: raw_kafka.run(where, args.raw_n, args.partitions, args.raw_repeats),
        "b": lambda: batch.run(
            where, args.batch_n, args.batch_size, args.batch_concurrency, args.partitions, env
        ),
        "c": lambda: unary.run(where, args.unary_n, args.callers, args.partitions, env),
        "g": lambda: grpc_floor.run(args.unary_n, args.callers),
        "d": lambda: steady.run(where, args.rate, args.seconds, args.partitions, env),
        "0": lambda: floor.run(where, args.rate, args.floor_seconds, args.partitions),
        "w": lambda: webhooks.run(where, args.webhook_n),
        "x": lambda: dispatch.run(where),
        "r": lambda: reconcile.run(where),
    }
    for key, step in steps.items():
        if key not in args.only:
            continue
        started = time.perf_counter()
        print(f"[{key}] running …", flush=True)
        try:
            results[key] = await step()
        except Exception as exc:
            traceback.print_exc()
            results[key] = {"error": repr(exc)}
        finally:
            await infra.sweep_topics(where.kafka_settings())
        results[key]["loadavg_after"] = os.getloadavg()
        print(f"[{key}] done in {time.perf_counter() - started:.1f} s", flush=True)
    return results


async def _run(args: argparse.Namespace, where: infra.Infra) -> tuple[str, dict[str, Any]]:
    return await infra.postgres_version(where.database_url), await _scenarios(args, where)


def main(argv: list[str] | None = None) -> int:
    """Runs the selected scenarios; with --strict, exit status 1 if a target was missed."""
    args = _arguments(argv)
    when = datetime.now(UTC)
    machine = report.machine()
    print(
        f"Herald bench {when:%Y-%m-%d %H:%M:%S} UTC — {machine['cores']} cores "
        f"({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"load {', '.join(f'{x:.2f}' for x in machine['loadavg_start'])}",
        flush=True,
    )
    started = time.perf_counter()
    with infra.servers() as where:
        print(
            f"servers: {where.bootstrap_servers}, PostgreSQL (started now: "
            f"{', '.join(where.started) or 'none'})",
            flush=True,
        )
        pg_version, results = asyncio.run(_run(args, where))
    versions = report.versions(infra.kafka_version(where.bootstrap_servers), pg_version)
    rows = report.figures(results)
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(report.table(rows))
    print(
        "\nCPU seconds while measuring (2 cores = 2 s per wall second; service = ingest "
        "and its relay in a-d, webhooks in w, reconcile in r (from its spawn); "
        "'other' = not ours):"
    )
    print(report.cpu_table(results))
    document = {
        "time": when.isoformat(),
        "seconds": time.perf_counter() - started,
        "machine": machine,
        "versions": versions,
        "parameters": dict(vars(args)),
        "figures": rows,
        "scenarios": results,
        "note": "the machine may be shared (other tests running): see loadavg and cpu",
    }
    path = report.save(document, when)
    print(f"\nsaved {path} (and latest.json) in {time.perf_counter() - started:.0f} s")
    return 1 if args.strict and any("FAIL" in r.verdict for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
