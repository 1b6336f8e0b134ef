"""The table and the JSON file: each figure beside its baseline or target."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")
BATCH_SHARE_TARGET = 0.5  # (b) ≥ 50 % of (a)
UNARY_TARGET = 3_000.0  # (c) events/s
LATENCY_P99_TARGET_MS = 50.0  # (d)


@dataclass(frozen=True)
class Figure:
    """One row of the table."""

    scenario: str
    name: str
    value: float
    unit: str
    baseline: str
    verdict: str


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, OS and load of this machine."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(memory_gb, 1),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }


def versions(kafka: str, postgres: str) -> dict[str, str]:
    """Python, the client libraries, and the servers."""
    out = {"python": sys.version.split()[0], "kafka": kafka, "postgresql": postgres}
    for package in ("grpcio", "protobuf", "aiokafka", "asyncpg", "jsonschema"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "?"
    return out


def _num(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def figures(results: dict[str, Any]) -> list[Figure]:
    """The rows, from the scenarios' details (a missing scenario has none)."""
    rows: list[Figure] = [
        Figure(key, "scenario failed: " + str(r["error"])[:60], math.nan, "", "", "ERROR")
        for key, r in results.items()
        if "error" in r
    ]
    ok = {key: r for key, r in results.items() if "error" not in r}
    if "a" in ok:
        rows += _raw_rows(ok["a"])
    if "b" in ok:
        rows += _batch_rows(ok["b"], ok.get("a"))
    if "c" in ok:
        rows += _unary_rows(ok["c"], ok.get("g"))
    if "d" in ok or "0" in ok:
        rows += _steady_rows(ok.get("d"), ok.get("0"))
    if "w" in ok:
        rows += _webhook_rows(ok["w"])
    if "x" in ok:
        rows += _dispatch_rows(ok["x"])
    if "r" in ok:
        rows += _reconcile_rows(ok["r"])
    return rows


def _webhook_rows(w: dict[str, Any]) -> list[Figure]:
    raw = float(w["raw_rate"])
    rows = [Figure("w", "raw aiohttp POST loop (same receiver)", raw, "req/s", "reference", "")]
    raw_cpu = w.get("raw_cpu_us_per_request")
    if raw_cpu is not None:
        rows.append(Figure("w", "  its CPU per request", raw_cpu, "µs", "", ""))
    for case in ("one", "many"):
        r = w[case]
        share = r["rate"] / raw
        verdict = f"{share:.0%} of raw; {'PASS' if share >= 0.5 and r['rate'] >= 3000 else 'FAIL'}"
        rows.append(
            Figure(
                "w",
                f"deliveries, {r['hooks']} webhook(s)",
                r["rate"],
                "del/s",
                ">= 3,000 and >= 50% of raw",
                verdict,
            )
        )
        p99 = r["consumed_to_attempt_ms"]["p99"]
        rows.append(
            Figure("w", f"  consumed → first attempt p99 (burst), {r['hooks']}", p99, "ms", "", "")
        )
        if "service_cpu_us_per_delivery" in r:
            rows.append(
                Figure(
                    "w",
                    f"  webhooks process CPU per delivery, {r['hooks']}",
                    r["service_cpu_us_per_delivery"],
                    "µs",
                    "",
                    "",
                )
            )
    if "steady" in w:
        r = w["steady"]
        for p in ("p50", "p99"):
            value = r["consumed_to_attempt_ms"][p]
            rows.append(
                Figure(
                    "w",
                    f"consumed → first attempt {p} at {r['offered_rate']:g} jobs/s",
                    value,
                    "ms",
                    "<= 50" if p == "p99" else "",
                    ("PASS" if value <= 50 else "FAIL") if p == "p99" else "",
                )
            )
    return rows


def _dispatch_rows(x: dict[str, Any]) -> list[Figure]:
    raw = float(x["raw_rate"])
    rows = [Figure("x", "raw consume→produce loop", raw, "rec/s", "reference", "")]
    for case in x["cases"]:
        share = case["jobs_per_s"] / raw
        rows.append(
            Figure(
                "x",
                f"dispatch, {case['routes']} route(s): jobs",
                case["jobs_per_s"],
                "jobs/s",
                ">= 50% of raw",
                f"{share:.0%} of raw; {'PASS' if share >= 0.5 else 'FAIL'}",
            )
        )
        name = f"  events, {case['routes']} route(s)"
        rows.append(Figure("x", name, case["events_per_s"], "ev/s", "", ""))
    return rows


def _reconcile_rows(r: dict[str, Any]) -> list[Figure]:
    raw = float(r["raw_rate"])
    share = r["rate"] / raw
    return [
        Figure("r", "raw consume→produce loop (orders + refunds)", raw, "rec/s", "reference", ""),
        Figure(
            "r",
            "reconcile: orders + refunds → Vibeapp topics",
            r["rate"],
            "rec/s",
            ">= 50% of raw",
            f"{share:.0%} of raw; {'PASS' if share >= 0.5 else 'FAIL'}",
        ),
        Figure(
            "r",
            "  the same from process spawn (start included)",
            r["rate_from_spawn"],
            "rec/s",
            "",
            "",
        ),
    ]


def _raw_rows(raw: dict[str, Any]) -> list[Figure]:
    rows = []
    for pattern in ("send_gather", "send_batch"):
        bar = " (the bar)" if pattern == raw["pattern"] else ""
        name = f"raw aiokafka, {pattern}{bar}"
        rows.append(Figure("a", name, raw[pattern]["rate"], "rec/s", "reference", ""))
    return rows


def _batch_rows(b: dict[str, Any], raw: dict[str, Any] | None) -> list[Figure]:
    if raw:
        bar = float(raw["rate"])
        share = b["rate"] / bar
        baseline = f">= 50% of a = {_num(bar * BATCH_SHARE_TARGET)}"
        verdict = f"{share:.1%} {'PASS' if share >= BATCH_SHARE_TARGET else 'FAIL'}"
    else:
        baseline, verdict = ">= 50% of a", "n/a (a not run)"
    name = f"PublishBatch x{b['batch_size']} → last on Kafka"
    return [
        Figure("b", name, b["rate"], "ev/s", baseline, verdict),
        Figure("b", "PublishBatch, all accepted", b["accepted_rate"], "ev/s", "", ""),
    ]


def _unary_rows(c: dict[str, Any], grpc_floor: dict[str, Any] | None) -> list[Figure]:
    passed = "PASS" if c["rate"] >= UNARY_TARGET else "FAIL"
    floor_rows = []
    if grpc_floor:
        floor_rows = [
            Figure(
                "c",
                "  gRPC floor: empty Publish, same client",
                grpc_floor["rate"],
                "calls/s",
                "reference",
                f"c is {c['rate'] / grpc_floor['rate']:.0%} of it",
            ),
        ]
    return [
        *floor_rows,
        Figure(
            "c",
            f"Publish x{c['callers']} callers, accepted",
            c["rate"],
            "ev/s",
            f">= {_num(UNARY_TARGET)}",
            f"{c['rate'] / UNARY_TARGET:.2f}x {passed}",
        ),
        Figure("c", "Publish latency p50", c["latency_ms"]["p50"], "ms", "", ""),
        Figure("c", "Publish latency p99", c["latency_ms"]["p99"], "ms", "", ""),
    ]


def _steady_rows(d: dict[str, Any] | None, floor: dict[str, Any] | None) -> list[Figure]:
    """(d) beside its target, with (d0), the measurement's floor, as the baseline."""
    if d is None:
        assert floor is not None
        return [
            Figure("d0", f"raw ack → consumer sees {p}", floor["on_kafka_ms"][p], "ms", "", "")
            for p in ("p50", "p95", "p99")
        ]
    target = d["target_rate"]
    rows = [
        Figure(
            "d",
            "steady Publish, achieved rate",
            d["rate"],
            "ev/s",
            _num(target),
            f"{d['rate'] / target:.2f}x",
        )
    ]
    for p in ("p50", "p95", "p99"):
        value = d["on_kafka_ms"][p]
        floor_text = f"floor {_num(floor['on_kafka_ms'][p])}" if floor else ""
        if p == "p99":
            baseline = f"<= {_num(LATENCY_P99_TARGET_MS)}" + (f"; {floor_text}" if floor else "")
            verdict = "PASS" if value <= LATENCY_P99_TARGET_MS else "FAIL"
        else:
            baseline, verdict = floor_text, ""
        rows.append(Figure("d", f"accepted → on Kafka {p}", value, "ms", baseline, verdict))
    return rows


def table(rows: list[Figure]) -> str:
    """The rows as a text table."""
    header = ("", "figure", "value", "unit", "baseline/target", "ratio / result")
    lines = [(r.scenario, r.name, _num(r.value), r.unit, r.baseline, r.verdict) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [
            str(cell).rjust(w) if col == 2 else str(cell).ljust(w)
            for col, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def cpu_table(results: dict[str, Any]) -> str:
    """CPU seconds per process group while each scenario measured (shared-box check)."""
    groups = ("service", "client", "kafka", "postgres", "other")
    header = ("", "wall s", *groups, "box busy")
    lines = []
    for key, r in results.items():
        cpu = r.get("cpu") or (r.get(r.get("pattern", ""), {}).get("runs") or [{}])[0]
        if not cpu:
            continue
        lines.append(
            (
                key,
                f"{cpu['wall_s']:.1f}",
                *(f"{cpu[f'{g}_cpu_s']:.1f}" if f"{g}_cpu_s" in cpu else "-" for g in groups),
                f"{cpu['box_busy_pct']:.0f}%",
            )
        )
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
        for line in [header, *lines]
    )


def save(document: dict[str, Any], when: datetime) -> Path:
    """Writes ``results/<UTC timestamp>.json`` and ``results/latest.json``."""
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(_finite(document), indent=2, default=_jsonable, allow_nan=False) + "\n"
    path = RESULTS / f"{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text, encoding="utf-8")
    (RESULTS / "latest.json").write_text(text, encoding="utf-8")
    return path


def _finite(value: Any) -> Any:
    """NaN and infinity become null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, Figure):
        return _finite(asdict(value))
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, Figure):
        return asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
