"""The event types named in the seeds, registered at first start.

Real schemas where a seed defines the payload; a JSON-object schema for the rest.
Built-ins are inserted only when absent, so a definition changed at runtime is
never overwritten by a restart.
"""

from __future__ import annotations

import json
from pathlib import Path

from herald.services.ingest.catalog import EventTypeDef

_SCHEMAS = Path(__file__).with_name("schemas")

# Events seed 000: id is a UUID, source urn:mastermobile:<system>, and subject,
# data_content_type and data_schema are required.
_INTEGRATION = {
    "integration.1c.masterdata.upserted": "1C master data replicated (NSI).",
    "integration.1c.masterdata.deleted": "1C master data deleted (NSI).",
    "integration.task.created": "Courier task created (logistics).",
    "integration.task.status_changed": "Courier task status changed (logistics).",
    "integration.return.created": "Courier return created (logistics).",
    "integration.cash.registered": "Cash operation registered (finance).",
    "integration.cash.reconciled": "Cash reconciliation done (finance).",
    "integration.anomaly.detected": "Anomaly detected (incidents).",
    "integration.conflict.detected": "Discrepancy or conflict detected (incidents).",
    "integration.audit.logged": "Technical audit of requests, signatures, idempotency.",
}
INTEGRATION_SOURCE = r"urn:mastermobile:[a-z0-9][a-z0-9:._-]*"
INTEGRATION_REQUIRED = ("subject", "datacontenttype", "dataschema")

# Notification API EVENTS.md (002): legacy envelope, event_id is a UUID.
_NOTIFICATION = {
    "user_registered": "A user registered (auth service).",
    "new_film_released": "A new film was released (content service).",
    "campaign_triggered": "A mass mailing was triggered (admin panel).",
}

# Katya webhooks (004).
_KATYA = {
    "trust.identity.created": "Identity created.",
    "trust.identity.updated": "Identity updated.",
    "trust.verification.created": "Verification created.",
    "trust.verification.updated": "Verification updated.",
    "trust.reputation.updated": "Reputation updated.",
    "message.created": "Message created.",
    "message.updated": "Message updated.",
    "message.deleted": "Message deleted.",
    "room.created": "Room created.",
    "room.updated": "Room updated.",
    "room.member.joined": "A user joined a room.",
    "room.member.left": "A user left a room.",
    "analytics.report.created": "Report created.",
    "analytics.report.completed": "Report completed.",
    "analytics.metric.updated": "Metric updated.",
    "security.alert.created": "Alert created.",
    "security.alert.updated": "Alert updated.",
    "security.scan.completed": "Scan completed.",
    "system.maintenance.start": "Maintenance started.",
    "system.maintenance.end": "Maintenance ended.",
    "system.status.changed": "System status changed.",
}

# Herald's own operational events, routed like any other.
_OPERATIONAL = {
    "herald.webhook.delivery_exhausted": "A webhook delivery failed its last retry.",
    "herald.webhook.disabled": "A webhook was disabled after failing continuously.",
    "herald.dispatch.dead_lettered": "Dispatch dead-lettered an event.",
    "herald.webhook.test": "A test event sent to a webhook on request.",
    "herald.webhook.secret_rotation_due": "A webhook's secret is older than the rotation "
    "period (SECRET_ROTATION_DAYS): rotate it.",
}


def _schema(name: str) -> str:
    path = _SCHEMAS / f"{name}.1.0.json"
    if not path.exists():
        path = _SCHEMAS / "object.1.0.json"
    return json.dumps(json.loads(path.read_text()))


def builtin_types() -> list[EventTypeDef]:
    """Every built-in (type, 1.0) definition."""
    out = [
        EventTypeDef(
            name,
            "1.0",
            _schema(name),
            description,
            id_must_be_uuid=True,
            source_pattern=INTEGRATION_SOURCE,
            required_attributes=INTEGRATION_REQUIRED,
        )
        for name, description in _INTEGRATION.items()
    ]
    out += [
        EventTypeDef(n, "1.0", _schema(n), d, id_must_be_uuid=True)
        for n, d in _NOTIFICATION.items()
    ]
    out += [EventTypeDef(n, "1.0", _schema(n), d) for n, d in (_KATYA | _OPERATIONAL).items()]
    return out
