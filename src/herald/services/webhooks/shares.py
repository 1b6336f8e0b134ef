"""How many attempts one process makes at once to each webhook and for each tenant. Pure.

A webhook whose last attempt was slow (a second or more, a timeout, no connection), or
that the process has not tried yet, holds at most ``per_webhook`` attempts in flight,
so one slow endpoint's backlog does not hold up the other webhooks. All such webhooks
of one tenant together hold at most ``per_tenant``: without that, a tenant with a few
slow endpoints and a backlog (test events cost it nothing) held every slot, and every
other tenant's deliveries waited behind its timeouts. A webhook whose last attempt was
quick is not capped.
"""

from __future__ import annotations

import collections
import uuid

MAX_KNOWN_FAST = 100_000  # webhooks remembered as fast (beyond that: capped until known)


class Shares:
    """The attempts in flight per webhook and per tenant, and which webhooks are fast."""

    def __init__(self, per_webhook: int, per_tenant: int) -> None:
        self.per_webhook = per_webhook
        self.per_tenant = max(per_tenant, per_webhook)
        self._busy: collections.Counter[uuid.UUID] = collections.Counter()
        # Attempts in flight to webhooks not known to be fast, per tenant.
        self._slow: collections.Counter[str] = collections.Counter()
        self._fast: dict[uuid.UUID, str] = {}  # webhook -> tenant: the last attempt was quick
        self._fast_of: collections.defaultdict[str, set[uuid.UUID]] = collections.defaultdict(set)

    def is_fast(self, webhook: uuid.UUID) -> bool:
        """Whether the webhook's last attempt here was quick (it is not capped)."""
        return webhook in self._fast

    def tenant_full(self, tenant: str) -> bool:
        """Whether the tenant's slow (or untried) webhooks hold their share together."""
        return self._slow[tenant] >= self.per_tenant

    def capped(self, webhook: uuid.UUID, tenant: str) -> bool:
        """Whether an attempt to the webhook must wait: not known to be fast, and it or
        its tenant has its share in flight."""
        if webhook in self._fast:
            return False
        return self._busy[webhook] >= self.per_webhook or self.tenant_full(tenant)

    def room(self, webhook: uuid.UUID, tenant: str) -> int | None:
        """How many more attempts the webhook may have in flight now (None: no cap)."""
        if webhook in self._fast:
            return None
        return min(self.per_webhook - self._busy[webhook], self.per_tenant - self._slow[tenant])

    def start(self, webhook: uuid.UUID, tenant: str) -> str | None:
        """Counts an attempt starting; returns the tenant it counts against as slow (None
        when the webhook is fast), to be given back to :meth:`finish`."""
        self._busy[webhook] += 1
        if webhook in self._fast:
            return None
        self._slow[tenant] += 1
        return tenant

    def finish(self, webhook: uuid.UUID, slow_tenant: str | None) -> None:
        """Counts an attempt's HTTP part over (``slow_tenant`` as :meth:`start` said)."""
        self._busy[webhook] -= 1
        if self._busy[webhook] <= 0:
            del self._busy[webhook]
        if slow_tenant is not None:
            self._slow[slow_tenant] -= 1
            if self._slow[slow_tenant] <= 0:
                del self._slow[slow_tenant]

    def learned(self, webhook: uuid.UUID, tenant: str, *, fast: bool) -> None:
        """Records how quick the webhook's last attempt was."""
        if not fast:
            if self._fast.pop(webhook, None) is not None:
                self._fast_of[tenant].discard(webhook)
                if not self._fast_of[tenant]:
                    del self._fast_of[tenant]
        elif webhook not in self._fast and len(self._fast) < MAX_KNOWN_FAST:
            self._fast[webhook] = tenant
            self._fast_of[tenant].add(webhook)

    def excluded(self) -> tuple[list[uuid.UUID], list[str], list[uuid.UUID]]:
        """What a claim leaves out: the webhooks with their share in flight, the tenants
        whose slow webhooks have theirs, and the fast webhooks of those tenants (which
        are not left out)."""
        hooks = [w for w, n in self._busy.items() if n >= self.per_webhook and w not in self._fast]
        tenants = [t for t, n in self._slow.items() if n >= self.per_tenant]
        fast = [w for t in tenants for w in self._fast_of.get(t, ())]
        return hooks, tenants, fast
