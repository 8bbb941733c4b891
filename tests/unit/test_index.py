"""VectorIndex: the sketch-filtered search must answer exactly what a float32 scan answers."""

from __future__ import annotations

import math
import threading

import numpy as np
import numpy.typing as npt
import pytest

from promptcache._errors import ConfigError
from promptcache._types import LogRecord
from promptcache.index import VectorIndex, _radius

DIM = 384
Matrix = npt.NDArray[np.float32]


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> Matrix:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_rows(rng: np.random.Generator, n: int, spread: float) -> Matrix:
    """Unit rows crowded around one direction, like real sentence embeddings (anisotropic)."""
    centre = unit_rows(rng, 1)[0]
    x = centre + spread * unit_rows(rng, n)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def neighbour(rng: np.random.Generator, source: npt.NDArray[np.float32], cosine: float) -> Matrix:
    """A unit vector at exactly `cosine` to `source` (a paraphrase of a stored prompt)."""
    z = rng.standard_normal(source.shape[0]).astype(np.float64)
    s = source.astype(np.float64)
    z -= (z @ s) * s
    z /= np.linalg.norm(z)
    return (cosine * s + math.sqrt(1.0 - cosine * cosine) * z).astype(np.float32)


def exact(
    rows: Matrix, live: npt.NDArray[np.bool_], q: Matrix, k: int, min_score: float
) -> list[tuple[int, float]]:
    """The reference: a full float32 scan."""
    scores = rows @ q
    ok = np.flatnonzero(live & (scores >= min_score))
    best = ok[np.argsort(-scores[ok], kind="stable")][:k]
    return [(int(i), float(scores[i])) for i in best]


def build(rows: Matrix, **kw: object) -> VectorIndex:
    index = VectorIndex(rows.shape[1], **kw)  # type: ignore[arg-type]
    index.add([f"e{i}" for i in range(len(rows))], rows)
    return index


def as_rows(result: list[tuple[str, float]]) -> list[int]:
    return [int(entry_id[1:]) for entry_id, _ in result]


# ---------------------------------------------------------------- the interface
def test_empty_and_basic_interface() -> None:
    index = VectorIndex(4)
    assert len(index) == 0 and index.dim == 4
    assert index.search(np.ones(4, dtype=np.float32)) == []
    index.add(["a", "b"], np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    assert len(index) == 2
    assert index.search(np.array([1, 0, 0, 0], dtype=np.float32), k=2) == [("a", 1.0), ("b", 0.0)]
    assert index.search(np.array([0, 1, 0, 0], dtype=np.float32), min_score=0.5) == [("b", 1.0)]
    assert index.search(np.array([1, 0, 0, 0], dtype=np.float32), k=0) == []
    index.add([], np.zeros((0, 4), dtype=np.float32))
    assert len(index) == 2


def test_nbytes_counts_vectors_sketches_and_expiries() -> None:
    index = VectorIndex(DIM, capacity=100)
    assert index.nbytes == 100 * (DIM * 4 + 384 // 8 + 8)


def test_bits_must_be_whole_words() -> None:
    with pytest.raises(ConfigError, match="multiple of 64"):
        VectorIndex(DIM, bits=100)


@pytest.mark.parametrize("exact_below", [0, 10**9], ids=["sketch", "scan"])
def test_replace_remove_expire_and_growth(exact_below: int) -> None:
    rng = np.random.default_rng(7)
    rows = unit_rows(rng, 300)
    index = VectorIndex(DIM, capacity=1, exact_below=exact_below)
    for start in range(0, 300, 37):  # many small appends: the arrays grow several times
        end = min(300, start + 37)
        index.add([f"e{i}" for i in range(start, end)], rows[start:end], [None] * (end - start))
    assert len(index) == 300
    assert index.search(rows[5], min_score=0.99) == [("e5", pytest.approx(1.0, abs=1e-6))]

    assert index.remove("e5") is True and index.remove("e5") is False
    assert index.search(rows[5], min_score=0.5) == []
    assert len(index) == 299

    # replacing an id masks its old row and serves the new vector
    index.add(["e6"], rows[7:8])
    assert index.search(rows[6], min_score=0.9) == []
    found = index.search(rows[7], k=2, min_score=0.9)
    assert sorted(i for i, _ in found) == ["e6", "e7"]
    assert len(index) == 299

    index.add(["t"], rows[8:9] * 1.0, [100.0])
    assert [i for i, _ in index.search(rows[8], k=2, min_score=0.9, now=99.0)] in (
        ["t", "e8"],
        ["e8", "t"],
    )
    assert [i for i, _ in index.search(rows[8], k=2, min_score=0.9, now=100.0)] == ["e8"]


def test_radius_is_the_binomial_tail_quantile() -> None:
    for cosine in (0.5, 0.8, 0.86, 0.95):
        p = math.acos(cosine) / math.pi
        units = math.ceil(p * 100_000)
        r = _radius(384, units, 1e-12)
        p_used = units / 100_000

        def tail(r0: int, p: float = p_used) -> float:
            return sum(math.comb(384, j) * p**j * (1 - p) ** (384 - j) for j in range(r0 + 1, 385))

        assert tail(r) <= 1e-12
        assert tail(r - 3) > 1e-12  # r is the quantile plus the 2-bit rounding slack, no more
        assert r > 384 * p  # far above the mean distance of a row at that cosine


def test_sketch_distance_follows_the_angle() -> None:
    """Each sketch bit differs with probability angle / pi (what the radius relies on)."""
    rng = np.random.default_rng(3)
    base = unit_rows(rng, 400)
    for cosine in (0.8, 0.95):
        near = np.stack([neighbour(rng, b, cosine) for b in base])
        index = build(base, exact_below=0)
        dist = []
        for i, q in enumerate(near):
            qcode = np.packbits((q @ index._directions) > 0).view(np.uint64)
            dist.append(int(np.bitwise_count(index._codes[:, i] ^ qcode).sum()))
        expected = 384 * math.acos(cosine) / math.pi
        assert abs(np.mean(dist) - expected) < 2.0
        assert max(dist) <= _radius(384, math.ceil(math.acos(cosine) / math.pi * 1e5), 1e-12)


# ---------------------------------------------------------------- equivalence with the scan
@pytest.mark.parametrize("seed", range(8))
def test_top1_of_near_duplicates_equals_the_exact_scan(seed: int) -> None:
    """A query with a stored neighbour at or above the threshold gets the scan's top-1."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5_000, 20_000))
    rows = unit_rows(rng, n)
    index = build(rows, exact_below=0)
    live = np.ones(n, dtype=bool)
    threshold = float(rng.choice([0.8, 0.86, 0.9]))
    for _ in range(60):
        source = int(rng.integers(n))
        # worst case included: the neighbour barely clears the threshold
        cosine = float(rng.choice([threshold + 1e-4, rng.uniform(threshold, 0.99)]))
        q = neighbour(rng, rows[source], cosine)
        want = exact(rows, live, q, 1, threshold)
        got = index.search(q, k=1, min_score=threshold)
        assert as_rows(got) == [i for i, _ in want] == [source]
        assert got[0][1] == pytest.approx(want[0][1], abs=1e-6)


@pytest.mark.parametrize("spread", [0.6, 1.0, 2.0])
def test_top_k_on_clustered_data_equals_the_exact_scan(spread: float) -> None:
    """Anisotropic data with paraphrase clusters: every row above min_score, best first."""
    rng = np.random.default_rng(int(spread * 10))
    base = clustered_rows(rng, 8_000, spread)
    # paraphrase families: several rows near one another
    family = np.stack([neighbour(rng, base[i % 50], rng.uniform(0.85, 0.99)) for i in range(400)])
    rows = np.concatenate([base, family])
    index = build(rows, exact_below=0)
    live = np.ones(len(rows), dtype=bool)
    dead = rng.choice(len(rows), 300, replace=False)
    for i in dead:
        index.remove(f"e{i}")
    live[dead] = False
    for t in range(80):
        src = rows[t % 50] if t % 2 else rows[int(rng.integers(len(rows)))]
        q = neighbour(rng, src, float(rng.uniform(0.8, 1.0)))
        min_score = float(rng.choice([0.8, 0.86, 0.9]))
        want = exact(rows, live, q, 5, min_score)
        got = index.search(q, k=5, min_score=min_score)
        assert as_rows(got) == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)


def test_unrelated_queries_find_nothing_above_threshold() -> None:
    rng = np.random.default_rng(11)
    rows = unit_rows(rng, 20_000)
    index = build(rows, exact_below=0)
    for q in unit_rows(rng, 50):
        assert index.search(q, k=4, min_score=0.8) == []
        # a low threshold (radius too wide) falls back to the scan and still answers exactly
        want = exact(rows, np.ones(len(rows), dtype=bool), q, 3, 0.1)
        assert as_rows(index.search(q, k=3, min_score=0.1)) == [i for i, _ in want]


def test_expired_and_removed_rows_never_answer_on_the_sketch_path() -> None:
    rng = np.random.default_rng(5)
    rows = unit_rows(rng, 10_000)
    index = VectorIndex(DIM, exact_below=0)
    index.add([f"e{i}" for i in range(10_000)], rows, [float(i) for i in range(10_000)])
    q = neighbour(rng, rows[9_000], 0.9)
    assert as_rows(index.search(q, min_score=0.8, now=8_999.0)) == [9_000]
    assert index.search(q, min_score=0.8, now=9_000.0) == []
    index.remove("e9000")
    assert index.search(q, min_score=0.8, now=0.0) == []


def test_non_unit_vectors_widen_the_radius_instead_of_missing() -> None:
    rng = np.random.default_rng(9)
    rows = unit_rows(rng, 6_000) * 3.0
    index = build(rows, exact_below=0)
    q = neighbour(rng, rows[42] / 3.0, 0.5)  # score 1.5 >= 1.2 at cosine 0.5
    assert as_rows(index.search(q, min_score=1.2)) == [42]


def test_degenerate_queries_match_nothing() -> None:
    rng = np.random.default_rng(17)
    index = build(unit_rows(rng, 5_000), exact_below=0)
    assert index.search(np.zeros(DIM, dtype=np.float32), min_score=0.8) == []
    assert index.search(np.full(DIM, np.nan, dtype=np.float32), min_score=0.8) == []
    with np.errstate(invalid="ignore"):
        assert index.search(np.full(DIM, np.inf, dtype=np.float32), min_score=0.8) == []


def test_concurrent_adds_and_searches() -> None:
    rng = np.random.default_rng(13)
    rows = unit_rows(rng, 8_000)
    index = VectorIndex(DIM, exact_below=0)
    errors: list[BaseException] = []

    def writer(part: int) -> None:
        try:
            for s in range(part * 2_000, (part + 1) * 2_000, 250):
                index.add([f"e{i}" for i in range(s, s + 250)], rows[s : s + 250])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(300):
                found = index.search(rows[i % 8_000], k=1, min_score=0.99)
                assert found in ([], [(f"e{i % 8_000}", pytest.approx(1.0, abs=1e-6))])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(index) == 8_000
    for i in (0, 1_999, 4_321, 7_999):
        assert as_rows(index.search(rows[i], min_score=0.99)) == [i]


def test_apply_log_in_chunks_equals_one_add() -> None:
    """A log applied a few rows at a time ends as if applied at once: the last record of an id
    decides (re-added, tombstoned, tombstoned then re-added), across chunk boundaries."""
    rng = np.random.default_rng(11)
    rows = unit_rows(rng, 12)
    records = [LogRecord(f"e{i}", rows[i], None) for i in range(10)]
    records += [
        LogRecord("e1", None),  # tombstone
        LogRecord("e2", rows[10], 5.0),  # replaced, now expiring
        LogRecord("e3", None),
        LogRecord("e3", rows[11], None),  # tombstoned, then back
    ]
    chunked, whole = VectorIndex(DIM), VectorIndex(DIM)
    chunked.apply_log(records, chunk=3)
    whole.apply_log(records, chunk=len(records))
    assert len(chunked) == len(whole) == 9
    for q in (rows[0], rows[1], rows[10], rows[2], rows[11]):
        assert chunked.search(q, k=3, min_score=0.5, now=1.0) == whole.search(
            q, k=3, min_score=0.5, now=1.0
        )
    assert chunked.search(rows[1], k=1, min_score=0.99, now=1.0) == []
    assert chunked.search(rows[10], k=1, min_score=0.99, now=1.0)[0][0] == "e2"
    assert chunked.search(rows[10], k=1, min_score=0.99, now=6.0) == []  # expired
    assert chunked.search(rows[11], k=1, min_score=0.99, now=1.0)[0][0] == "e3"
    chunked.apply_log([LogRecord("e0", None)])
    assert len(chunked) == 8
