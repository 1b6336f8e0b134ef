"""The key check, the client-name allow-list and the CRL check wrap unary calls only
(grpc.aio interceptors see a streaming handler as another kind): a streaming RPC added
to a service would be open to every caller unless they learn to wrap it too."""

from __future__ import annotations

from herald.dispatch.v1 import dispatch_pb2
from herald.ingest.v1 import ingest_pb2
from herald.reconcile.v1 import reconcile_pb2
from herald.webhooks.v1 import subscriptions_pb2, webhooks_pb2


def test_every_rpc_herald_serves_is_unary() -> None:
    services = [
        service
        for module in (dispatch_pb2, ingest_pb2, reconcile_pb2, subscriptions_pb2, webhooks_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    ]
    assert len(services) >= 5
    streaming = [
        f"{service.full_name}/{method.name}"
        for service in services
        for method in service.methods
        if method.client_streaming or method.server_streaming
    ]
    assert streaming == [], "extend UnaryInterceptor's guards to streaming calls first"
