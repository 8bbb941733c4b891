"""The key layout: every key UpstashStore and UpstashStats write, all under one prefix.

``p`` = the prefix (``pc:`` by default); ``N`` = ``namespace_id(namespace)``, the first 32 hex
digits of the SHA-256 of a namespace, so any namespace string makes a short, unambiguous key::

    p e:ID            the entry as JSON, PX = its TTL                   get()
    p x:N:EXACT_KEY   the same JSON, PX = its TTL                       exact lookup in sync()
    p ids             ZSET entry id -> expires_at (+inf: never)         count()
    p nss             SET of the namespace ids N                        compact()
    p epoch           random; changes on clear()                        } a namespace's generation
    p gen:N           random; changes when N's log is compacted         } is "EPOCH.GEN"
    p log:N:GEN       segment 0 of the namespace's APPEND-only log      sync()
    p log:N:GEN:S     segment S >= 1 of that log                        sync()
    p seg:N:GEN       the log's last segment S (absent: 0)              sync()
    p lock:NAME       a fill lock: its holder's token, PX = its TTL     try_lock(), unlock()
    p window:NAME     a rate-limit window's count, PX = its TTL         count_window()
    p doc:NAME        a kept JSON document, PX = its TTL                put_document()
    p stats           HASH of exact counters (HINCRBYFLOAT)             UpstashStats

``clear()`` deletes every key under the prefix except ``kept_by_clear``: the epoch (which it
renews) and the stats hash. The Lua scripts derive segment keys from segment 0's key as
``segment`` does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_PREFIX = "pc:"


def namespace_id(namespace: str) -> str:
    """The short id ``N`` of a namespace in its keys."""
    return hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The keys under ``prefix`` (see the module docstring)."""

    prefix: str = DEFAULT_PREFIX

    # ------------------------------------------------------------------ entries
    def entry(self, entry_id: str) -> str:
        return f"{self.prefix}e:{entry_id}"

    def exact(self, nsid: str, exact_key: str) -> str:
        return f"{self.prefix}x:{nsid}:{exact_key}"

    @property
    def ids(self) -> str:
        return f"{self.prefix}ids"

    @property
    def namespaces(self) -> str:
        return f"{self.prefix}nss"

    # ------------------------------------------------------------------ vector logs
    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    def gen(self, nsid: str) -> str:
        return f"{self.prefix}gen:{nsid}"

    def log(self, nsid: str, generation: str, segment: int = 0) -> str:
        return self.segment(f"{self.prefix}log:{nsid}:{generation}", segment)

    @staticmethod
    def segment(log: str, segment: int) -> str:
        """Segment ``segment`` of the log whose segment 0 is ``log``."""
        return log if segment == 0 else f"{log}:{segment}"

    def segments(self, nsid: str, generation: str) -> str:
        """The counter of the log's last segment."""
        return f"{self.prefix}seg:{nsid}:{generation}"

    def segments_of(self, log: str) -> str:
        """The segment counter of the log whose segment 0 is ``log``."""
        return f"{self.prefix}seg:{log.removeprefix(self.prefix + 'log:')}"

    # ------------------------------------------------------------------ locks, rate windows
    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def window(self, name: str) -> str:
        return f"{self.prefix}window:{name}"

    def document(self, name: str) -> str:
        return f"{self.prefix}doc:{name}"

    # ------------------------------------------------------------------ stats, clear()
    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def kept_by_clear(self) -> frozenset[str]:
        """The keys under the prefix that ``clear()`` leaves: the epoch and the stats."""
        return frozenset((self.epoch, self.stats))

    @property
    def pattern(self) -> str:
        """A SCAN ``MATCH`` pattern of every key under the prefix."""
        return "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + "*"
