"""Admin: read or remove one stored answer of a tenant, list recent entries, remove every entry
of a namespace, a model or a tenant, or of one prompt, or clear the whole cache.

What is removed is gone everywhere: from the store (so from every process sharing it), from this
index and from the answers single-flight still shares.
"""

from __future__ import annotations

from collections.abc import Callable

from ._accounting import Accounting, live_entry
from ._boundary import GuardedStore
from ._claim import Claims
from ._indexes import Indexes
from ._keys import canonical, tenant_of
from ._types import Entry

#: Entries read from the store at a time while listing or flushing.
_PAGE = 500


class Admin:
    def __init__(
        self,
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

    def recent(self, tenant: str | None, offset: int, limit: int) -> tuple[list[Entry], int | None]:
        """Up to ``limit`` live entries from ``offset`` on, newest first (``tenant``'s only, when
        given), and the offset of the next page (None at the end). Raises StoreError."""
        found: list[Entry] = []
        while len(found) < limit:
            page = self._store.entries(offset, _PAGE)
            for i, entry in enumerate(page):
                if tenant is None or tenant_of(entry.namespace) == tenant:
                    found.append(entry)
                    if len(found) == limit:
                        return found, offset + i + 1
            if not page:  # a short page need not be the last (Upstash skips a vanished entry)
                return found, None
            offset += _PAGE
        return found, offset

    def flush(
        self,
        *,
        namespace: str | None = None,
        model: str | None = None,
        tenant: str | None = None,
        prompt: str | None = None,
    ) -> int:
        """Remove every entry matching all the filters given (at least one): of a namespace, a
        model, a tenant, or whose prompt is ``prompt`` (canonically). Returns how many were
        removed. Raises StoreError."""
        if namespace is None and model is None and tenant is None and prompt is None:
            raise ValueError("flush needs a namespace, a model, a tenant or a prompt")
        text = None if prompt is None else canonical(prompt)
        doomed: list[Entry] = []
        offset = 0
        while True:  # collect first: deleting while paging would shift the pages
            page = self._store.entries(offset, _PAGE)
            doomed += [
                e
                for e in page
                if (namespace is None or e.namespace == namespace)
                and (model is None or e.model == model)
                and (tenant is None or tenant_of(e.namespace) == tenant)
                and (text is None or e.prompt == text)
            ]
            if not page:
                break
            offset += _PAGE
        removed = 0
        for entry in doomed:
            removed += bool(self._store.delete(entry.id))
            self._indexes.remove(entry.namespace, entry.id)
        if doomed:
            self._claims.forget()
        return removed

    def clear(self) -> int:
        """Delete every entry and reset the counters; returns how many entries there were.
        Raises StoreError or StatsError."""
        removed = self._store.clear()
        self._indexes.clear()
        self._claims.forget()
        self._accounting.reset()
        return removed
