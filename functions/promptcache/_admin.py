"""Admin: read or remove one stored answer of a tenant, or clear the whole cache.

What is removed is gone everywhere: from the store (so from every process sharing it), from this
process's index and from the answers single-flight still shares.
"""

from __future__ import annotations

from collections.abc import Callable

from ._accounting import Accounting, live_entry
from ._boundary import GuardedStore
from ._claim import Claims
from ._indexes import Indexes
from ._types import Entry


class Admin:
    def __init__(
        self,
        *,
        store: GuardedStore,
        indexes: Indexes,
        claims: Claims,
        accounting: Accounting,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._indexes = indexes
        self._claims = claims
        self._accounting = accounting
        self._clock = clock

    def entry(self, tenant: str, entry_id: str) -> Entry | None:
        """One of ``tenant``'s live stored answers, or None (another tenant's entries are
        invisible). Raises StoreError."""
        return live_entry(self._store, tenant, entry_id, self._clock())

    def forget(self, tenant: str, entry_id: str) -> Entry | None:
        """Remove one of ``tenant``'s stored answers (a wrong one, say): neither tier serves it
        again, here or in any process sharing the store. Returns the removed entry, or None when
        the tenant has no such entry. Raises StoreError."""
        entry = self.entry(tenant, entry_id)
        if entry is None:
            return None
        removed = self._store.delete(entry_id)
        self._indexes.remove(entry.namespace, entry_id)
        self._claims.forget()  # a lingering shared answer may be this entry's
        return entry if removed else None

    def clear(self) -> int:
        """Delete every entry and reset the counters; returns how many entries there were.
        Raises StoreError or StatsError."""
        removed = self._store.clear()
        self._indexes.clear()
        self._claims.forget()
        self._accounting.reset()
        return removed
