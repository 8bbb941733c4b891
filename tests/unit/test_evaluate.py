"""The evaluation engine: pairs, intents, folds, metrics, calibration, and `promptcache eval`
end to end on small pairs files written here."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from promptcache import ConfigError, PromptCache, PromptCacheError, runtime
from promptcache.adapters.memory import MemoryStats, MemoryStore
from promptcache.calibration import CALIBRATION_FILE, read_calibration
from promptcache.guards import numbers_guard
from promptcache.settings import Settings
from promptcache_tools.cli import main
from promptcache_tools.evaluation import (
    Candidates,
    MemoEmbedder,
    Metrics,
    Pair,
    UnionFind,
    Workload,
    decide,
    evaluate,
    folds,
    groups,
    intents,
    pick_threshold,
    read_pairs,
    score,
    select,
    table,
    write_calibration,
)
from tests.unit.fakes import FakeEmbedder


def write_pairs(path: Path, rows: list[dict[str, object]]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def row(a: str, b: str, dup: bool, i: int = 0) -> dict[str, object]:
    return {"id": f"p{i}", "a": a, "b": b, "duplicate": dup}


# ---------------------------------------------------------------- reading pairs
@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.jsonl.gz"])
def test_read_pairs_plain_and_gzip_normalizes(tmp_path: Path, name: str) -> None:
    path = write_pairs(tmp_path / name, [row("  How DO I  swim? ", "How can I swim?", True)])
    assert read_pairs(path) == [Pair("How DO I swim?", "How can I swim?", True)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a": "x", "b": "y", "duplicate": true}\nnot json\n', r":2: not valid JSON"),
        ('["a", "b"]\n', r":1: each line must be a JSON object"),
        ('{"a": "", "b": "y", "duplicate": true}\n', r":1: 'a' must be a non-empty string"),
        ('{"a": "x", "b": 3, "duplicate": true}\n', r":1: 'b' must be a non-empty string"),
        ('{"a": "x", "b": "y", "duplicate": "yes"}\n', r":1: 'duplicate' must be true or false"),
        ("\n\n", r"no pairs"),
    ],
)
def test_read_pairs_rejects_bad_lines(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptCacheError, match=message):
        read_pairs(path)


def test_read_pairs_rejects_a_broken_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(PromptCacheError, match="cannot read"):
        read_pairs(path)


# ---------------------------------------------------------------- intents and folds
def test_union_find_joins_chains() -> None:
    sets = UnionFind()
    sets.union("a", "b")
    sets.union("c", "b")
    sets.add("d")
    assert sets.find("a") == sets.find("c") != sets.find("d")


def test_intents_follow_chains_of_duplicates_only() -> None:
    pairs = [
        Pair("a", "b", True),
        Pair("b", "c", True),  # a ~ b ~ c: one intent through the chain
        Pair("c", "d", False),  # not a duplicate: d stays apart
        Pair("e", "f", True),
    ]
    got = intents(pairs)
    assert got["a"] == got["b"] == got["c"]
    assert len({got["a"], got["d"], got["e"]}) == 3 and got["e"] == got["f"]


def test_folds_keep_connected_texts_together_and_are_deterministic() -> None:
    pairs = [Pair(f"q{i}", f"q{i + 1}", i % 2 == 0) for i in range(0, 40, 3)]
    pairs += [Pair(f"x{i}", f"y{i}", False) for i in range(60)]
    first, again = folds(pairs), folds(list(pairs))
    assert first == again and set(first) == {"fit", "holdout"}
    where: dict[str, set[str]] = {}
    for pair, fold in zip(pairs, first, strict=True):
        for text in (pair.a, pair.b):
            where.setdefault(text, set()).add(fold)
    assert all(len(v) == 1 for v in where.values())  # no text on both sides
    chain = [Pair("m1", "m2", True), Pair("m2", "m3", False), Pair("m3", "m4", True)]
    assert len(set(folds(chain))) == 1


def test_select_parts_and_seeded_samples() -> None:
    pairs = [Pair(f"a{i}", f"b{i}", True) for i in range(100)]
    fit, holdout = select(pairs, "fit"), select(pairs, "holdout")
    assert len(fit) + len(holdout) == 100 and not set(fit) & set(holdout)
    sample = select(pairs, "all", limit=10, seed=3)
    assert len(sample) == 10 and sample == select(pairs, "all", limit=10, seed=3)
    assert sample != select(pairs, "all", limit=10, seed=4)
    with pytest.raises(PromptCacheError, match="part must be"):
        select(pairs, "test")
    with pytest.raises(PromptCacheError, match="--limit must be at least 1"):
        select(pairs, "all", limit=0)
    one = [Pair("only", "pair", True)]
    empty = "holdout" if folds(one) == ["fit"] else "fit"
    with pytest.raises(PromptCacheError, match="no pairs in part"):
        select(one, empty)


def test_limit_draws_whole_groups_so_no_labelled_relation_is_missing() -> None:
    rng = random.Random(7)
    texts = [f"t{i}" for i in range(300)]
    # chains, stars and loose pairs: groups of many sizes, duplicates and look-alikes mixed
    pairs = [Pair(rng.choice(texts), rng.choice(texts), rng.random() < 0.4) for _ in range(260)]
    pairs += [Pair(f"x{i}", f"y{i}", False) for i in range(40)]
    sizes = sorted(len(g) for g in groups(pairs))
    assert sizes[-1] > 10 and sizes[0] == 1 and sum(sizes) == len(pairs)
    for part in ("all", "fit", "holdout"):
        whole = select(pairs, part)
        for limit, seed in [(1, 0), (25, 0), (25, 1), (120, 3)]:
            chosen = select(pairs, part, limit, seed)
            assert min(limit, len(whole)) <= len(chosen) <= len(whole)
            assert chosen == select(pairs, part, limit, seed)  # seeded
            picked = {t for p in chosen for t in (p.a, p.b)}
            between = [p for p in pairs if p.a in picked and p.b in picked]
            assert sorted(between, key=pairs.index) == chosen  # every pair between chosen texts
            work, full = Workload.build(chosen), Workload.build(pairs)
            assert {(work.entries[c // len(work.queries)], work.queries[c % len(work.queries)])
                    for c in work.labelled.tolist()} == {
                (full.entries[c // len(full.queries)], full.queries[c % len(full.queries)])
                for c in full.labelled.tolist()
                if full.entries[c // len(full.queries)] in picked
                and full.queries[c % len(full.queries)] in picked
            }  # fmt: skip
    assert select(pairs, "all", 25, 0) != select(pairs, "all", 25, 1)
    # no group more than needed: without the largest kept group the limit is not reached
    chosen = select(pairs, "all", 120, 3)
    kept = [g for g in groups(pairs) if pairs[g[0]] in chosen]
    assert sum(map(len, kept)) == len(chosen) and len(chosen) - max(map(len, kept)) < 120


# ---------------------------------------------------------------- metrics
def test_decisions_and_metrics_by_hand() -> None:
    pairs = [
        Pair("e0", "q0", True),  # q0 -> e0 correct
        Pair("e1", "q1", True),  # q1's best candidate is e2 (wrong), rejected -> e1
        Pair("e2", "q2", False),  # q2's intent is not in the cache
        Pair("e3", "e3", True),  # exact repeat: exact tier
    ]
    work = Workload.build(pairs)
    assert work.entries == ("e0", "e1", "e2", "e3")
    assert work.queries == ("q0", "q1", "q2", "e3")
    assert work.answerable.tolist() == [True, True, False, True]
    assert work.exact.tolist() == [-1, -1, -1, 3]
    cands = Candidates(
        index=np.array([[0, 1], [2, 1], [0, 1], [3, 0]]),
        sims=np.array([[0.95, 0.5], [0.93, 0.91], [0.92, 0.4], [1.0, 0.2]], dtype=np.float32),
        rejects={"g": np.array([[False, False], [True, False], [False, False], [False, False]])},
    )
    plain = score("fixed", 0.9, decide(work, cands, 0.9), work)
    assert (plain.hits, plain.correct, plain.answerable, plain.queries) == (4, 2, 3, 4)
    assert plain.precision == 0.5 and plain.recall == pytest.approx(2 / 3)
    assert plain.false_hits_per_1k == 500.0 and plain.hit_rate == 1.0
    guarded = score("guarded", 0.9, decide(work, cands, 0.9, ["g"]), work)
    assert (guarded.hits, guarded.correct) == (4, 3)  # the guard let the right entry through
    strict = score("strict", 0.94, decide(work, cands, 0.94, ["g"]), work)
    assert (strict.hits, strict.correct, strict.false_hits) == (2, 2, 0)
    assert Metrics("none", 0.9, 10, 5, 0, 0).precision == 1.0


def test_false_hits_on_labelled_pairs_are_told_apart_from_pairs_nobody_labelled() -> None:
    pairs = [
        Pair("e0", "q0", True),
        Pair("e1", "q0", False),  # q0 -> e1: wrong, and labelled so
        Pair("e2", "q1", True),  # q1 -> e0: wrong, but nobody labelled (e0, q1)
        Pair("e3", "q2", False),  # q2 -> e2: wrong, unlabelled; its labelled e3 is not chosen
        Pair("e4", "q3", True),  # q3 -> e4: right
    ]
    work = Workload.build(pairs)
    assert work.entries == ("e0", "e1", "e2", "e3", "e4")
    assert work.queries == ("q0", "q1", "q2", "q3")
    cands = Candidates(
        index=np.array([[1, 0], [0, 2], [2, 3], [4, 0]]),
        sims=np.array([[0.95, 0.93], [0.94, 0.92], [0.96, 0.91], [0.97, 0.2]], dtype=np.float32),
    )
    m = score("fixed", 0.9, decide(work, cands, 0.9), work)
    assert (m.hits, m.correct, m.false_hits, m.labelled_false) == (4, 1, 3, 1)
    assert m.labelled_false_per_1k == 250.0 and m.false_hits_per_1k == 750.0
    body = m.as_dict()
    assert body["labelled_false_hits"] == 1 and body["labelled_false_hits_per_1k"] == 250.0
    assert table([m]).splitlines()[-1].endswith("| 750.0 | 250.0 |")
    # the second candidate, labelled different, is what q2 gets once the first is rejected
    rejects = {"g": np.array([[False, False], [False, False], [True, False], [False, False]])}
    guarded = score(
        "g", 0.9, decide(work, Candidates(cands.index, cands.sims, rejects), 0.9, ["g"]), work
    )
    assert (guarded.false_hits, guarded.labelled_false) == (3, 2)
    nothing = score("miss", 0.99, np.full(len(work.queries), -1, dtype=np.int64), work)
    assert (nothing.false_hits, nothing.labelled_false) == (0, 0)


def test_pick_threshold_needs_precision_to_hold_above_it() -> None:
    curve = [
        Metrics("c", 0.80, 100, 50, 60, 30),  # 0.50
        Metrics("c", 0.85, 100, 50, 40, 36),  # 0.90
        Metrics("c", 0.90, 100, 50, 30, 25),  # 0.83: breaks the run for 0.9 targets
        Metrics("c", 0.95, 100, 50, 10, 10),  # 1.00
    ]
    assert pick_threshold(curve, 0.9).threshold == 0.95  # type: ignore[union-attr]
    assert pick_threshold(curve, 0.8).threshold == 0.85  # type: ignore[union-attr]
    assert pick_threshold([Metrics("c", 0.9, 10, 5, 5, 1)], 0.9) is None
    assert pick_threshold([Metrics("c", 0.99, 10, 5, 0, 0)], 0.9) is None  # no hit, no pick


# ---------------------------------------------------------------- engine on a fake embedder
def test_evaluate_decides_like_the_real_lookup_path() -> None:
    e = np.eye(8, dtype=np.float32)

    def vec(*parts: tuple[int, float]) -> np.ndarray:
        v = sum(w * e[i] for i, w in parts)
        return (v / np.linalg.norm(v)).astype(np.float32)

    vectors = {
        "how do i swim?": e[0],
        "how do i swim 2 laps?": vec((0, 0.9), (1, 0.19**0.5)),
        "how do i cook rice?": e[3],
        "how can i swim?": vec((0, 0.97), (2, 0.0591**0.5)),  # 0.97 to "swim?"
        # 0.98 to "2 laps", then 0.93 to "swim?": the numbers guard rejects both
        "how do i swim 3 laps?": vec((0, 0.93), (1, 0.328), (4, 0.1659)),
        "how can i cook rice?": vec((3, 0.95), (5, 0.0975**0.5)),
        "what is rice?": vec((3, 0.91), (6, 0.1719**0.5)),  # its intent is not in the cache
    }
    pairs = [
        Pair("how do i swim?", "how can i swim?", True),
        Pair("how do i swim 2 laps?", "how do i swim 3 laps?", False),
        Pair("how do i cook rice?", "how can i cook rice?", True),
        Pair("how do i cook rice?", "what is rice?", False),
    ]
    fake = FakeEmbedder(vectors)
    cache = PromptCache(
        store=MemoryStore(),
        embedder=MemoEmbedder(fake),  # as build_cache gives it
        stats=MemoryStats(),
        threshold=0.9,
        guards=(numbers_guard,),
    )
    ev = evaluate(cache, pairs, check=100)
    assert ev.checked == 4 and ev.agreed == 4  # every query also asked through lookup()
    assert ev.policy.threshold == 0.9 and ev.policy.guards == ("numbers_guard",)
    mine = ev.default()
    assert (mine.hits, mine.correct, mine.answerable) == (3, 2, 2)  # "what is rice?" is false
    assert ev.metrics("no guards", 0.9).false_hits == 2
    strict = ev.default(0.96)
    assert (strict.hits, strict.correct) == (1, 1)
    unguarded = ev.metrics("fixed", 0.96)
    assert (unguarded.correct, unguarded.false_hits) == (1, 1)  # "3 laps" -> "2 laps"
    calls = fake.calls
    evaluate(cache, pairs, check=100)  # every text was embedded once, real lookups included
    assert fake.calls == calls


# ---------------------------------------------------------------- calibration file
def test_calibration_round_trip_and_runtime_precedence(tmp_path: Path) -> None:
    write_calibration(tmp_path, "minilm-l6-v2-int8", {"threshold": 0.9123})
    write_calibration(tmp_path, "other", {"threshold": 0.5})  # merged, not replaced
    assert read_calibration(tmp_path, "minilm-l6-v2-int8") == 0.9123
    assert read_calibration(tmp_path, "other") == 0.5
    assert read_calibration(tmp_path, "unknown") is None
    assert read_calibration(tmp_path / "nowhere", "other") is None

    env = {"PROMPTCACHE_STORE": "memory", "PROMPTCACHE_DATA_DIR": str(tmp_path)}
    assert runtime.build(Settings.from_env(env)).threshold == 0.9123  # file > embedder default
    env["PROMPTCACHE_THRESHOLD"] = "0.8"
    assert runtime.build(Settings.from_env(env)).threshold == 0.8  # environment > file
    (tmp_path / CALIBRATION_FILE).unlink()
    del env["PROMPTCACHE_THRESHOLD"]
    cache = runtime.build(Settings.from_env(env))
    assert cache.threshold == cache.embedder.default_threshold  # no file: embedder default


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"minilm-l6-v2-int8": {"threshold": 1.5}}',
        '{"minilm-l6-v2-int8": {"threshold": "x"}}',
    ],
)
def test_a_bad_calibration_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    (tmp_path / CALIBRATION_FILE).write_text(content, encoding="utf-8")
    env = {"PROMPTCACHE_STORE": "memory", "PROMPTCACHE_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match=CALIBRATION_FILE):
        runtime.build(Settings.from_env(env))


def test_the_strict_guards_add_their_checks() -> None:
    off = runtime.build(
        Settings.from_env({"PROMPTCACHE_STORE": "memory", "PROMPTCACHE_THRESHOLD": "0.9"})
    )
    strict = runtime.build(
        Settings.from_env(
            {
                "PROMPTCACHE_STORE": "memory",
                "PROMPTCACHE_THRESHOLD": "0.9",
                "PROMPTCACHE_STRICT_GUARDS": "on",
            }
        )
    )
    assert [g.__name__ for g in strict.rules.guards] == [g.__name__ for g in off.rules.guards]
    assert off.rules.strict_guards == ()
    assert {g.__name__ for g in strict.rules.strict_guards} == {"negation_guard", "target_guard"}
    assert strict.rules.strict_guards_band == 0.04
    with pytest.raises(ConfigError, match="PROMPTCACHE_STRICT_GUARDS"):
        Settings.from_env({"PROMPTCACHE_STRICT_GUARDS": "maybe"})


# ---------------------------------------------------------------- the commands, end to end
TINY = [
    row("How do I reset my password?", "What is the way to reset my password?", True, 1),
    row("How do I reset my password?", "How can I reset my password?", True, 2),
    row("What is the capital of France?", "What's the capital city of France?", True, 3),
    row("How do I boil 2 eggs?", "How do I boil 3 eggs?", False, 4),
    row(
        "How do I convert Celsius to Fahrenheit?",
        "How do I convert Fahrenheit to Celsius?",
        False,
        5,
    ),
    row("Which planet is the largest?", "What is the best pizza topping?", False, 6),
    row("Which planet is the largest?", "What is the largest planet in the solar system?", True, 7),
    row("How do I bake bread at home?", "How do I bake bread at home?", True, 8),
]


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMPTCACHE_DATA_DIR", str(tmp_path / "data"))
    runtime.reset()
    yield tmp_path
    runtime.reset()


def test_eval_command_end_to_end(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    pairs = write_pairs(isolated / "tiny.jsonl.gz", TINY)
    plot, report = isolated / "pr.png", isolated / "report.json"
    code = main(["eval", str(pairs), "--quiet", "--plot", str(plot), "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Portkey (0.95)" in out and "GPTCache similar-cache (~0.6)" in out
    assert "promptcache (default)" in out and "only swap_guard" in out and "the bar" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = json.loads(report.read_text())
    assert body["checked"] == body["agreed"] == 8  # 8 distinct queries, all through lookup()
    by_name = {p["policy"]: p for p in body["policies"]}
    mine, loose = by_name["promptcache (default)"], by_name["GPTCache similar-cache (~0.6)"]
    assert mine["queries"] == loose["queries"] == 8
    assert mine["false_hits"] < loose["false_hits"]  # the guards and threshold stop look-alikes
    assert mine["correct"] >= 3  # the paraphrases and the exact repeat still hit


def test_eval_command_reports_a_bad_file(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = isolated / "bad.jsonl"
    path.write_text('{"a": "x"}\n', encoding="utf-8")
    assert main(["eval", str(path), "--quiet", "--no-plot"]) == 2
    assert "'b' must be a non-empty string" in capsys.readouterr().err
    assert main(["eval", str(isolated / "missing.jsonl"), "--quiet", "--no-plot"]) == 2


def test_calibrate_command_writes_what_the_cache_reads(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = write_pairs(isolated / "tiny.jsonl", TINY)
    assert (
        main(["calibrate", str(pairs), "--part", "all", "--target-precision", "0.99", "--quiet"])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    body = json.loads((isolated / "data" / CALIBRATION_FILE).read_text())
    record = body["minilm-l6-v2-int8"]
    assert record["fit"]["precision"] >= 0.99 and record["target_precision"] == 0.99
    runtime.reset()
    assert runtime.cache().threshold == record["threshold"]


def test_calibrate_command_fails_clearly_when_the_target_is_out_of_reach(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row("What is the capital of France?", "What's the capital city of France?", False)]
    pairs = write_pairs(isolated / "hard.jsonl", rows)
    assert (
        main(["calibrate", str(pairs), "--part", "all", "--target-precision", "1", "--quiet"]) == 2
    )
    assert "no threshold reaches precision" in capsys.readouterr().err
    assert not (isolated / "data" / CALIBRATION_FILE).exists()
    assert main(["calibrate", str(pairs), "--target-precision", "0", "--quiet"]) == 2


# ---------------------------------------------------------------- the verifier model
def test_evaluate_with_a_verifier_model_agrees_with_the_lookup_path() -> None:
    from promptcache._verify import ModelCheck
    from promptcache_tools.evaluation import Model
    from tests.unit.fakes import FakeVerifier, blend, unit

    base = unit("swim")
    vectors = {
        "how do i swim?": base,
        "how can i swim?": blend(base, unit("a"), 0.95),
        "how do i dive?": blend(base, unit("b"), 0.88),  # below 0.9: only the model can accept
        "how do i cook?": unit("cook"),
        "how do i bake?": blend(unit("cook"), unit("c"), 0.93),
    }
    verifier = FakeVerifier({("how can i swim?", "how do i swim?"): 0.9})
    pairs = [
        Pair("how do i swim?", "how can i swim?", True),
        Pair("how do i swim?", "how do i dive?", False),
        Pair("how do i cook?", "how do i bake?", False),
    ]
    cache = PromptCache(
        store=MemoryStore(), embedder=FakeEmbedder(vectors), stats=MemoryStats(), threshold=0.9,
        verifier_model=ModelCheck(verifier, cutoff=0.5, below=0.05),
    )  # fmt: skip
    ev = evaluate(cache, pairs, check=100)
    assert ev.checked == 3 and ev.agreed == 3
    assert ev.policy.model == Model(0.5, 0.05, 1.0)
    mine = ev.default()
    assert (mine.hits, mine.correct) == (1, 1)  # "bake" (0.93, scored 0) rejected by the model
    assert ev.metrics("fixed", 0.9).false_hits == 1
    assert {m.name for m in ev.models()} >= {"verifier: band 0.04"}
    assert ev.cands.scores is not None and np.isnan(ev.cands.scores).any()
