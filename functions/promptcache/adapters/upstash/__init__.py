"""Upstash Redis over its REST API: the deployed store, and exact counters for the stats.

One module each:

- ``_keys``: the key layout, every key the store and the stats write under the prefix.
- ``_rest``: the REST client (one command, ``/pipeline``, ``/multi-exec``).
- ``_codec``: the vector log's record format (pure: no network).
- ``_scripts``: every Lua script.
- ``_log``: segments and generations, reading and re-appending a namespace's log.
- ``_compaction``: rewriting a log with only its live records, and the generation switch.
- ``_store``: UpstashStore, the Store protocol.
- ``_stats``: UpstashStats.
"""

from __future__ import annotations

from ._codec import decode_records, encode_records, record_dtype
from ._keys import DEFAULT_PREFIX, KeyLayout
from ._log import DEFAULT_SEGMENT_BYTES, SEGMENT_STRIDE
from ._rest import UpstashREST
from ._stats import UpstashStats
from ._store import DEFAULT_CHUNK_BYTES, MIN_CHUNK_BYTES, UpstashStore

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_PREFIX",
    "DEFAULT_SEGMENT_BYTES",
    "MIN_CHUNK_BYTES",
    "SEGMENT_STRIDE",
    "KeyLayout",
    "UpstashREST",
    "UpstashStats",
    "UpstashStore",
    "decode_records",
    "encode_records",
    "record_dtype",
]
