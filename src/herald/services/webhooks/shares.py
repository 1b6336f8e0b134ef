"""How many attempts one process makes at once to each webhook and for each tenant. Pure.

A webhook whose last attempt was slow (a second or more, a timeout, no connection), or
that the process has not tried yet, holds at most ``per_webhook`` attempts in flight,
so one slow endpoint's backlog does not hold up the other webhooks. All such webhooks
of one tenant together hold at most ``per_tenant``: without that, a tenant with a few
slow endpoints and a backlog (test events cost it nothing) held every slot, and every
other tenant's deliveries waited behind its timeouts. A webhook whose last attempt was
quick is not capped.

Past its tenant's share, a webhook known to be slow starts nothing, but one not tried
yet starts one attempt (a probe) when it has none in flight: a tenant's healthy webhook
is not held up behind its own slow ones until their attempts time out, and is known to
be fast (uncapped) after its first answer. A tenant has at most ``per_webhook`` probes
in flight: without that bound, a tenant with many new webhooks whose endpoints time out
(created at will, test events cost nothing) held every slot with one probe each, and
every other tenant waited a timeout, again for each new batch of webhooks. With its
probes at that bound, all of a tenant's webhooks not known to be fast wait
(:meth:`excluded_tenants`).

A webhook this process has not tried yet may still be known to be slow: another
process (or this one before a restart) found it so and stored that (``slowness.py``),
and :meth:`heard_slow` takes it as slow here too, so it gets no probe past its
tenant's share. What this process measures itself comes first.

A verdict holds for the endpoint it was reached at (the webhook's URL, and when it was
last enabled): a claimed delivery showing another (:meth:`at_endpoint`: the webhook got
another URL or was re-enabled, by whichever process served the change) makes the
webhook untried again here.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Hashable
from dataclasses import dataclass

MAX_KNOWN = 100_000  # webhooks remembered as fast, and as slow (beyond: taken as untried)
_MOVED = object()  # the endpoint of a webhook moved here, until a claim shows the new one


@dataclass(frozen=True, slots=True)
class Held:
    """An attempt counted against its tenant's share of slow (or untried) attempts,
    from :meth:`Shares.start` to :meth:`Shares.finish`."""

    tenant: str
    probe: bool  # started past the tenant's share: an untried webhook's probe


class _ByTenant(dict[uuid.UUID, str]):
    """Webhooks -> their tenants (a dict: ``in`` stays a plain lookup on the attempt's
    path), also found by tenant; at most MAX_KNOWN of them."""

    def __init__(self) -> None:
        super().__init__()
        self._of: collections.defaultdict[str, set[uuid.UUID]] = collections.defaultdict(set)

    def add(self, webhook: uuid.UUID, tenant: str) -> None:
        """Remembers the webhook, unless MAX_KNOWN are remembered already."""
        if len(self) < MAX_KNOWN:
            self[webhook] = tenant
            self._of[tenant].add(webhook)

    def discard(self, webhook: uuid.UUID) -> None:
        tenant = self.pop(webhook, None)
        if tenant is not None:
            self._of[tenant].discard(webhook)
            if not self._of[tenant]:
                del self._of[tenant]

    def of(self, tenant: str) -> set[uuid.UUID]:
        """The tenant's webhooks (not to be changed)."""
        return self._of.get(tenant, set())


class Shares:
    """The attempts in flight per webhook and per tenant, and which webhooks are fast
    or slow."""

    def __init__(self, per_webhook: int, per_tenant: int) -> None:
        self.per_webhook = per_webhook
        self.per_tenant = max(per_tenant, per_webhook)
        self._busy: collections.Counter[uuid.UUID] = collections.Counter()
        self._busy_tenant: dict[uuid.UUID, str] = {}  # the tenant of each webhook in _busy
        # Attempts in flight to webhooks not known to be fast, per tenant.
        self._slow: collections.Counter[str] = collections.Counter()
        self._probes: collections.Counter[str] = collections.Counter()  # of those, probes
        self._fast = _ByTenant()  # the last attempt was quick
        self._known_slow = _ByTenant()  # the last attempt was slow
        # Each webhook's endpoint as its latest claim (or verdict) showed it.
        self._endpoints: dict[uuid.UUID, Hashable] = {}

    def is_fast(self, webhook: uuid.UUID) -> bool:
        """Whether the webhook's last attempt here was quick (it is not capped)."""
        return webhook in self._fast

    def tenant_full(self, tenant: str) -> bool:
        """Whether the tenant's slow (or untried) webhooks hold their share together."""
        return self._slow[tenant] >= self.per_tenant

    def probing_full(self, tenant: str) -> bool:
        """Whether the tenant has its share full and its probes at their bound too."""
        return self.tenant_full(tenant) and self._probes[tenant] >= self.per_webhook

    def capped(self, webhook: uuid.UUID, tenant: str) -> bool:
        """Whether an attempt to the webhook must wait now (:meth:`room` is 0)."""
        room = self.room(webhook, tenant)
        return room is not None and room <= 0

    def room(self, webhook: uuid.UUID, tenant: str) -> int | None:
        """How many more attempts the webhook may have in flight now (None: no cap)."""
        if webhook in self._fast:
            return None
        busy = self._busy[webhook]
        if not self.tenant_full(tenant):
            return min(self.per_webhook - busy, self.per_tenant - self._slow[tenant])
        if busy or webhook in self._known_slow or self._probes[tenant] >= self.per_webhook:
            return 0
        return 1  # an untried one's probe

    def start(self, webhook: uuid.UUID, tenant: str) -> Held | None:
        """Counts an attempt starting; returns what it holds of its tenant's share (None
        when the webhook is fast), to be given back to :meth:`finish`."""
        self._busy[webhook] += 1
        self._busy_tenant[webhook] = tenant
        if webhook in self._fast:
            return None
        held = Held(tenant, probe=self.tenant_full(tenant))
        self._slow[tenant] += 1
        if held.probe:
            self._probes[tenant] += 1
        return held

    def finish(self, webhook: uuid.UUID, held: Held | None) -> None:
        """Counts an attempt's HTTP part over (``held`` as :meth:`start` said)."""
        self._busy[webhook] -= 1
        if self._busy[webhook] <= 0:
            del self._busy[webhook]
            self._busy_tenant.pop(webhook, None)
        if held is not None:
            _count_off(self._slow, held.tenant)
            if held.probe:
                _count_off(self._probes, held.tenant)

    def at_endpoint(self, webhook: uuid.UUID, endpoint: Hashable) -> None:
        """A claimed delivery shows the webhook's endpoint (its URL, and when it was
        last enabled): a verdict reached at another one no longer holds (untried
        again), nor will an attempt still in flight to that one say anything."""
        known = self._endpoints.get(webhook)
        if known == endpoint:
            return
        if known is not None:
            self.forget(webhook)
        if known is not None or len(self._endpoints) < 2 * MAX_KNOWN:
            self._endpoints[webhook] = endpoint

    def moved(self, webhook: uuid.UUID) -> None:
        """The webhook got another URL or was re-enabled (UpdateWebhook served here):
        untried, and attempts still in flight to its old endpoint say nothing of the
        new one, which the next claim shows."""
        self.forget(webhook)
        if webhook in self._endpoints:
            self._endpoints[webhook] = _MOVED

    def learned(
        self, webhook: uuid.UUID, tenant: str, *, fast: bool, endpoint: Hashable = None
    ) -> bool:
        """Records how quick the webhook's last attempt (at ``endpoint``) was; returns
        whether that changes what this process knew of it (untried, fast or slow). An
        attempt at an endpoint the webhook has left since (a claim showed another, or
        it moved here) changes nothing; nor, past 2 x MAX_KNOWN webhooks, does one to a
        webhook whose endpoint cannot be remembered (a verdict it could not tie to an
        endpoint would outlive a move)."""
        if endpoint is not None:
            known = self._endpoints.get(webhook)
            if known is None:
                self.at_endpoint(webhook, endpoint)
                if webhook not in self._endpoints:
                    return False
            elif known != endpoint:
                return False
        return self._learn(webhook, tenant, fast=fast)

    def _learn(self, webhook: uuid.UUID, tenant: str, *, fast: bool) -> bool:
        if fast:
            if webhook in self._fast:
                return False
            self._known_slow.discard(webhook)
            self._fast.add(webhook, tenant)
            return True
        self._fast.discard(webhook)
        if webhook in self._known_slow:
            return False
        self._known_slow.add(webhook, tenant)
        return True

    def heard_slow(self, webhook: uuid.UUID, tenant: str, endpoint: Hashable = None) -> None:
        """Another process found the webhook (at ``endpoint``) slow: so it is here, unless
        this process has tried it itself (there)."""
        if endpoint is not None:
            self.at_endpoint(webhook, endpoint)
            if webhook not in self._endpoints:
                return
        if webhook not in self._fast and webhook not in self._known_slow:
            self._learn(webhook, tenant, fast=False)

    def forget(self, webhook: uuid.UUID) -> None:
        """The webhook's endpoint changed (another URL, or re-enabled): untried again."""
        self._fast.discard(webhook)
        self._known_slow.discard(webhook)

    def excluded(self) -> list[uuid.UUID]:
        """The webhooks a claim leaves out: those not known to be fast with their own
        share in flight; and, of a tenant whose share is full, those known to be slow
        and those not known to be fast with an attempt in flight (an untried one that
        has none may be claimed: its probe)."""
        full = {t for t, n in self._slow.items() if n >= self.per_tenant}
        hooks = [
            w
            for w, n in self._busy.items()
            if w not in self._fast and (n >= self.per_webhook or self._busy_tenant[w] in full)
        ]
        for tenant in full:
            hooks.extend(w for w in self._known_slow.of(tenant) if w not in self._busy)
        return hooks

    def excluded_tenants(self) -> tuple[list[str], list[uuid.UUID]]:
        """The tenants whose webhooks a claim leaves out but for those known to be fast
        (returned too): their share is full and so are their probes, so any other of
        their webhooks, untried ones included, would be handed straight back."""
        tenants = [t for t in self._slow if self.probing_full(t)]
        return tenants, [w for t in tenants for w in self._fast.of(t)]


def _count_off(counter: collections.Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
