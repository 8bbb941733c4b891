"""Decision quality on human-labelled pairs: ``promptcache eval`` and ``promptcache calibrate``.

The protocol (the one GPTCache benchmarks itself with, made fair): from a file of labelled pairs
``{"id", "a", "b", "duplicate"}``, store every distinct ``a`` in a cache built exactly as the
server builds it (same embedder, index and guards; an isolated in-memory store), then ask every
distinct ``b``. Two questions share an *intent* when a chain of ``duplicate: true`` pairs joins
them (union-find); each stored answer is a label of its prompt's intent, so a hit is correct
when the returned entry shares the query's intent.

- hit rate = hits / queries
- precision = correct hits / hits
- recall = correct hits / queries whose intent is in the cache
- false hits per 1,000 queries = (hits - correct hits) / queries * 1000
- of them, on labelled pairs: false hits whose query and entry form a pair of the file (labelled
  ``duplicate: false``). The others join two texts nobody labelled together; the protocol counts
  them wrong because no chain of duplicates joins them, though some are the same question (on
  Quora pairs, reading a sample found most were), so this column is the floor of the truth and
  the full count its ceiling.

Every distinct text is embedded once (batched). The candidates of every query (the index's
``candidates`` best entries and their cosine similarities) are computed once, and every policy is
decided from them: the peers' fixed thresholds (no guards) and this cache's own policy (its
threshold and guards). A sample of queries also goes through the real
``PromptCache.lookup`` and must reach the same decisions.

Folds: pairs are split in two halves, ``fit`` and ``holdout``, by the connected component of
texts they belong to (every pair, duplicate or not, is an edge), so no text is in both halves.
Parameters are chosen on ``fit`` and reported on both.

The modules, by job: ``data`` (pairs, intents, folds, the sample, the workload), ``embedding``
(every text embedded once, the on-disk vector memo), ``policy`` (the vectorised decision policy:
nearest entries, guard and verifier verdicts, ``decide``), ``simulation`` (one evaluation through
a real cache), ``metrics`` (scores and the calibrated threshold), ``report`` (tables, bar lines,
plot) and ``commands`` (``run_eval``, ``run_calibrate``).
"""

from __future__ import annotations

from .commands import build_cache, run_calibrate, run_eval, write_calibration
from .data import (
    PARTS,
    Pair,
    Progress,
    UnionFind,
    Workload,
    folds,
    groups,
    intents,
    read_pairs,
    select,
)
from .embedding import MemoEmbedder
from .metrics import Metrics, pick_threshold, score
from .policy import (
    GRID,
    MODEL_POLICIES,
    PEERS,
    Candidates,
    Model,
    decide,
    judge,
    nearest,
    verify,
)
from .report import bar_check, iso_recall_false_hits, iter_rows, model_bars, plot, table
from .simulation import EVAL_MODEL, Evaluation, Policy, evaluate

__all__ = [
    "EVAL_MODEL",
    "GRID",
    "MODEL_POLICIES",
    "PARTS",
    "PEERS",
    "Candidates",
    "Evaluation",
    "MemoEmbedder",
    "Metrics",
    "Model",
    "Pair",
    "Policy",
    "Progress",
    "UnionFind",
    "Workload",
    "bar_check",
    "build_cache",
    "decide",
    "evaluate",
    "folds",
    "groups",
    "intents",
    "iso_recall_false_hits",
    "iter_rows",
    "judge",
    "model_bars",
    "nearest",
    "pick_threshold",
    "plot",
    "read_pairs",
    "run_calibrate",
    "run_eval",
    "score",
    "select",
    "table",
    "verify",
    "write_calibration",
]
