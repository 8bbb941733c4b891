"""Writers of one SQLite file for the tests and the benchmark: threads (and processes) storing
entries and adding counters at once, each acknowledged write recorded, so that what the file holds
afterwards can be checked against what was acknowledged.

``write(path, writer, threads, per_thread, ack)`` runs ``threads`` threads in this process, each
storing ``per_thread`` entries (namespace ``ns-{writer}``) and adding, per entry, 1 to the counters
``requests`` and ``writer:{writer}``; after each write returns, its entry id (or ``counter``) is
appended to the ``ack`` file and flushed, so a writer killed at any point has recorded only what
the store acknowledged. Failures are counted, not raised.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptcache.adapters.sqlite import SQLiteStats, SQLiteStore
from tests.support.entries import make_entry

DIM = 8


@dataclass
class Written:
    entries: int = 0
    counters: int = 0
    failures: int = 0


def vector_of(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def write(
    path: Path,
    writer: str,
    threads: int,
    per_thread: int,
    ack: Path | None = None,
    timeout: float = 5.0,
) -> Written:
    """See the module's docstring; ``timeout`` is the store's busy timeout."""
    db = SQLiteStore(path, timeout=timeout)
    stats = SQLiteStats(db)
    done = Written()
    lock = threading.Lock()
    fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if ack is not None else None

    def acked(line: str) -> None:
        if fd is not None:
            os.write(fd, (line + "\n").encode())

    def run(t: int) -> None:
        for i in range(per_thread):
            prompt = f"{writer}-{t}-{i}"
            entry = make_entry(prompt, ns=f"ns-{writer}")
            try:
                db.put(entry, vector_of(t * per_thread + i))
            except Exception:
                with lock:
                    done.failures += 1
            else:
                acked(f"entry {entry.id} {prompt}")
                with lock:
                    done.entries += 1
            try:
                stats.add({"requests": 1, f"writer:{writer}": 1})
            except Exception:
                with lock:
                    done.failures += 1
            else:
                acked("counter")
                with lock:
                    done.counters += 1
            try:
                db.sync(f"ns-{writer}", f"key-{prompt}", None)  # readers beside the writers
            except Exception:
                with lock:
                    done.failures += 1

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if fd is not None:
        os.close(fd)
    db.close()
    return done


if __name__ == "__main__":  # a writer process: PATH WRITER THREADS PER_THREAD ACK [TIMEOUT]
    import sys

    path_, writer_, threads_, per_thread_, ack_ = sys.argv[1:6]
    timeout_ = float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
    result = write(Path(path_), writer_, int(threads_), int(per_thread_), Path(ack_), timeout_)
    print(result.entries, result.counters, result.failures)
