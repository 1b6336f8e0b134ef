"""Files and commands the local Kafka needs: jars, server.properties, cluster id, JVM flags."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from ._util import REPO_ROOT, DevEnvError, require_program, run

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j.properties"
HOST = "127.0.0.1"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# vibe is the application user; admin is only named in the listener's JAAS
# config (inter-broker traffic stays on PLAINTEXT).
SCRAM_USERS = {"vibe": "vibe-secret", "admin": "admin-secret"}
# kafka-run-class.sh defaults (G1, short pauses); no GC logging or JMX so the
# JVM starts as fast as it can. Heap sizes are added per command.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]


def java_executable() -> str:
    """Return ``$JAVA_HOME/bin/java`` or ``java`` from PATH, or raise with the install hint."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return require_program("java", "apt-get install -y openjdk-17-jre-headless")


def cds_flags(java: str, libs_dir: Path, archive_dir: Path) -> list[str]:
    """AppCDS flags: reuse a class-data archive, or have this run write one at exit.

    Loading the broker's classes from an archive cuts startup by about a second.
    The archive is only valid for one JVM build and one classpath, so its name
    carries a hash of both. The JVM writes ``*.jsa.tmp`` when it exits; only a
    clean stop of a broker that became ready promotes it (:func:`promote_cds`).
    """
    jvm = Path(os.path.realpath(java))
    libjvm = jvm.parent.parent / "lib" / "server" / "libjvm.so"
    stat = (libjvm if libjvm.is_file() else jvm).stat()
    marker = libs_dir / ".pom-sha256"
    key_src = f"{jvm}:{stat.st_size}:{stat.st_mtime_ns}:{marker.read_text().strip()}"
    archive = archive_dir / f"kafka-cds-{hashlib.sha256(key_src.encode()).hexdigest()[:12]}.jsa"
    for stale in archive_dir.glob("kafka-cds-*.jsa*"):
        if stale != archive:
            stale.unlink(missing_ok=True)
    # The CDS warnings (hundreds of "Skipping ... not linked" lines) are noise.
    quiet = "-Xlog:cds*=error"
    if archive.is_file() and archive.stat().st_size > 0:
        return [quiet, f"-XX:SharedArchiveFile={archive}"]
    return [quiet, f"-XX:ArchiveClassesAtExit={archive}.tmp"]


def promote_cds(archive_dir: Path, *, keep: bool) -> None:
    """Turn a freshly dumped ``*.jsa.tmp`` into the archive (``keep``) or drop it."""
    for dumped in archive_dir.glob("kafka-cds-*.jsa.tmp"):
        if keep and dumped.stat().st_size > 0:
            dumped.rename(dumped.with_suffix(""))
        else:
            dumped.unlink(missing_ok=True)


def new_cluster_id() -> str:
    """22-char URL-safe base64 of 16 random bytes, like ``StorageTool random-uuid``."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka never hands out ids starting with '-': they parse as CLI options.
        if not cid.startswith("-"):
            return cid


def scram_format_args() -> list[str]:
    """``--add-scram`` arguments for ``StorageTool format`` creating :data:`SCRAM_USERS`."""
    return [
        arg
        for name, password in SCRAM_USERS.items()
        for arg in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")
    ]


def ensure_libs(libs_dir: Path) -> None:
    """Copy the broker jars from Maven once; redo it when the pom changes."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    marker = libs_dir / ".pom-sha256"
    if marker.is_file() and marker.read_text().strip() == digest:
        return
    mvn = require_program("mvn", "apt-get install -y maven")
    staging = libs_dir.with_name(libs_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
    run(
        [mvn, "-q", "-B", "-f", str(POM), *goal],
        what="downloading the Kafka jars with Maven",
        timeout=900,
    )
    if not any(staging.glob("kafka_2.13-*.jar")):
        raise DevEnvError(f"Maven finished but no kafka_2.13 jar landed in {staging}")
    (staging / ".pom-sha256").write_text(digest + "\n")
    # Swap in a complete directory so an interrupted download is never used.
    shutil.rmtree(libs_dir, ignore_errors=True)
    staging.rename(libs_dir)


def server_properties(port: int, controller_port: int, scram_port: int, data_dir: Path) -> str:
    """Render server.properties for one combined broker+controller node."""
    advertised = f"PLAINTEXT://{HOST}:{port},SASL_PLAINTEXT://{HOST}:{scram_port}"
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{SCRAM_USERS["admin"]}";'
    )
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"{advertised},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": advertised,
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
        ),
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": jaas,
        "log.dirs": str(data_dir),
        "num.partitions": "6",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # 50 partitions (the default) make the first consumer group wait
        # noticeably on one node; 6 is plenty for dev and tests.
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "6",
        "group.initial.rebalance.delay.ms": "0",
        # After a crash (kill()) the restarted broker is refused registration
        # (DUPLICATE_BROKER_REGISTRATION) until its old session expires: 9 s by
        # default, ~13 s with retry backoff. 3 s brings a post-crash start to ~4 s.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "1000",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # Dev data is disposable: keep a day, in 64 MiB segments so retention can bite.
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.retention.check.interval.ms": "60000",
    }
    text = "# Generated by herald.devenv on every start; edits are overwritten.\n"
    return text + "".join(f"{key}={value}\n" for key, value in props.items())
