"""The Upstash vector log's record format (adapters/upstash/_codec.py): pure, no server."""

from __future__ import annotations

import ast
import base64
import math
from pathlib import Path

import numpy as np
import pytest

from promptcache import LogRecord, StoreError
from promptcache.adapters.upstash import _codec, decode_records, encode_records, record_dtype

DIMS = [1, 2, 3, 8, 384, 768, 1024]


def vectors(dim: int, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(dim).astype(np.float32) for _ in range(n)]


def assert_same(got: list[LogRecord], want: list[LogRecord]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.entry_id, g.expires_at) == (w.entry_id, w.expires_at)
        if w.vector is None:
            assert g.vector is None
        else:
            assert g.vector is not None
            np.testing.assert_array_equal(g.vector, w.vector)


def with_byte(text: bytes, index: int, value: int) -> bytes:
    """``text`` (base64) with byte ``index`` of the decoded records set to ``value``."""
    raw = bytearray(base64.b64decode(text))
    raw[index] = value
    return base64.b64encode(bytes(raw))


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dim", DIMS)
def test_records_round_trip_and_concatenate(dim: int) -> None:
    assert record_dtype(dim).itemsize % 3 == 0
    rng = np.random.default_rng(dim)
    records = [
        LogRecord("a" * 32, rng.standard_normal(dim).astype(np.float32), 1.5e9),
        LogRecord("b", None, None),
        LogRecord("\u00e9t\u00e9", rng.standard_normal(dim).astype(np.float32), None),
    ]
    text = b"".join(encode_records([r], dim) for r in records)  # appended one by one
    assert b"=" not in text
    assert text == encode_records(records, dim)
    parsed, used, chars = decode_records(text)
    assert used == len(text) and chars == len(text) // 3
    assert_same(parsed, records)


@pytest.mark.parametrize("dim", [*DIMS, 0xFFFF])
def test_one_record_is_a_whole_number_of_base64_quanta(dim: int) -> None:
    size = record_dtype(dim).itemsize
    assert size % 3 == 0 and size - (_codec.HEADER.size + 4 * dim) in (0, 1, 2)
    text = encode_records([LogRecord("x", np.ones(dim, np.float32))], dim)
    assert len(text) == size * 4 // 3 and not text.endswith(b"=")
    parsed, used, chars = decode_records(text)
    assert (len(parsed), used, chars) == (1, len(text), len(text))


def test_expiry_round_trips_and_none_is_never() -> None:
    records = [
        LogRecord("never", np.ones(4, np.float32), None),
        LogRecord("soon", np.ones(4, np.float32), 1_800_000_000.125),
        LogRecord("zero", np.ones(4, np.float32), 0.0),
    ]
    parsed, _, _ = decode_records(encode_records(records, 4))
    assert [r.expires_at for r in parsed] == [None, 1_800_000_000.125, 0.0]
    raw = np.frombuffer(base64.b64decode(encode_records(records[:1], 4)), record_dtype(4))
    assert math.isnan(raw["exp"][0])  # stored as NaN


def test_a_vector_of_any_shape_is_flattened() -> None:
    v = np.arange(6, dtype=np.float64).reshape(2, 3)
    (parsed,), _, _ = decode_records(encode_records([LogRecord("m", v)], 6))
    assert parsed.vector is not None and parsed.vector.dtype == np.float32
    np.testing.assert_array_equal(parsed.vector, np.arange(6, dtype=np.float32))


def test_no_records_are_no_text() -> None:
    assert encode_records([], 8) == b""
    assert decode_records(b"") == ([], 0, None)


# ------------------------------------------------------------------------------- tombstones
@pytest.mark.parametrize("dim", [1, 8, 384])
def test_tombstones_carry_no_vector(dim: int) -> None:
    tombstones = [LogRecord("gone", None), LogRecord("\u2620", None, 1.0)]
    text = encode_records(tombstones, dim)
    raw = np.frombuffer(base64.b64decode(text), record_dtype(dim))
    assert raw["kind"].tolist() == [0, 0] and not raw["vec"].any()
    parsed, used, chars = decode_records(text)
    assert used == len(text) and chars == len(text) // 2
    assert_same(parsed, tombstones)


def test_tombstones_and_vectors_interleave() -> None:
    a, b = vectors(8, 2)
    records = [LogRecord("a", a), LogRecord("a", None), LogRecord("b", b), LogRecord("b", None)]
    parsed, _, _ = decode_records(encode_records(records, 8))
    assert [r.vector is None for r in parsed] == [False, True, False, True]
    assert_same(parsed, records)


# ------------------------------------------------------------------------------- partial tails
def test_a_partial_record_is_left_for_the_next_read() -> None:
    text = encode_records([LogRecord("a", np.ones(8, np.float32))] * 3, 8)
    parsed, used, chars = decode_records(text[:-10])
    assert len(parsed) == 2 and used == 2 * chars
    assert decode_records(text[:20]) == ([], 0, None)


@pytest.mark.parametrize("dim", [1, 8])
def test_every_cut_of_a_log_reads_its_whole_records_then_resumes(dim: int) -> None:
    records = [LogRecord(f"r{i}", v, float(i)) for i, v in enumerate(vectors(dim, 4, seed=dim))]
    text = encode_records(records, dim)
    chars = len(text) // len(records)
    for cut in range(len(text) + 1):
        parsed, used, size = decode_records(text[:cut])
        if cut < _codec.HEADER_CHARS:  # too short to read a header
            assert (parsed, used, size) == ([], 0, None)
            continue
        assert size == chars and used == cut // chars * chars
        assert_same(parsed, records[: cut // chars])
        rest, rest_used, _ = decode_records(text[used:])  # the next read starts where this ended
        assert rest_used == len(text) - used
        assert_same(parsed + rest, records)


def test_reading_may_start_at_any_record_boundary() -> None:
    records = [LogRecord(f"r{i}", v) for i, v in enumerate(vectors(3, 5))]
    text = encode_records(records, 3)
    chars = len(text) // len(records)
    for start in range(len(records)):
        parsed, _, _ = decode_records(text[start * chars :])
        assert_same(parsed, records[start:])


# ------------------------------------------------------------------------------- refusals
def test_bad_records_are_refused() -> None:
    with pytest.raises(StoreError, match="1-32 UTF-8 bytes"):
        encode_records([LogRecord("x" * 33, np.ones(4, np.float32))], 4)
    with pytest.raises(StoreError, match="dimensions"):
        encode_records([LogRecord("x", np.ones(5, np.float32))], 4)
    with pytest.raises(StoreError, match="corrupt vector log"):
        decode_records(b"Z" * 200)
    good = encode_records([LogRecord("a", np.ones(4, np.float32))] * 2, 4)
    other_dim = encode_records([LogRecord("b", np.ones(5, np.float32))], 5)
    with pytest.raises(StoreError, match="does not match"):
        decode_records(good[: len(good) // 2] + other_dim[: len(good) // 2])


@pytest.mark.parametrize("entry_id", ["", "x" * 33, "a\x00b", "\u00e9" * 17])
def test_ids_that_do_not_fit_are_refused(entry_id: str) -> None:
    with pytest.raises(StoreError, match="1-32 UTF-8 bytes without NUL"):
        encode_records([LogRecord(entry_id, None)], 4)


def test_an_id_of_exactly_32_utf8_bytes_fits() -> None:
    (parsed,), _, _ = decode_records(encode_records([LogRecord("\u00e9" * 16, None)], 4))
    assert parsed.entry_id == "\u00e9" * 16


@pytest.mark.parametrize("dim", [0, -1, 0x10000])
def test_dimensions_outside_a_u16_are_refused(dim: int) -> None:
    with pytest.raises(StoreError, match="1-65535 dimensions"):
        encode_records([LogRecord("x", None)], dim)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, 2, "header version=2"),  # version
        (0, 0, "header version=0"),
        (1, 2, "kind=2"),  # kind
        (2, 0, "dim=0"),  # dim: the low byte of 8 (the high byte is 0)
    ],
)
def test_a_wrong_first_header_is_refused(index: int, value: int, match: str) -> None:
    text = encode_records([LogRecord("a", np.ones(8, np.float32))] * 2, 8)
    with pytest.raises(StoreError, match=match):
        decode_records(with_byte(text, index, value))


@pytest.mark.parametrize(("index", "value"), [(0, 2), (1, 2), (2, 9)])
def test_a_wrong_later_header_is_refused(index: int, value: int) -> None:
    text = encode_records([LogRecord("a", np.ones(8, np.float32))] * 3, 8)
    size = record_dtype(8).itemsize
    with pytest.raises(StoreError, match="does not match"):
        decode_records(with_byte(text, 2 * size + index, value))


def test_the_version_written_is_the_one_read() -> None:
    raw = base64.b64decode(encode_records([LogRecord("a", None)], 4))
    assert raw[0] == _codec.VERSION == 1


# ------------------------------------------------------------------------------- purity
def test_the_codec_needs_no_network() -> None:
    """_codec imports the standard library, numpy and the core's types and errors only."""
    tree = ast.parse(Path(_codec.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported == {
        "__future__",
        "base64",
        "binascii",
        "math",
        "struct",
        "collections.abc",
        "typing",
        "numpy",
        "..._errors",
        "..._types",
    }
