"""``promptcache eval`` and ``promptcache calibrate``: read the pairs, run the evaluation on a cache
built as the server builds it, print the report; calibrate writes the threshold the cache reads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from promptcache._errors import ConfigError, PromptCacheError
from promptcache.calibration import calibration_path

from .data import Pair, Progress, intents, read_pairs, select
from .embedding import MemoEmbedder
from .metrics import Metrics, pick_threshold
from .report import bar_check, iter_rows, model_bars, plot, table
from .simulation import Evaluation, evaluate

log = logging.getLogger("promptcache")


def write_calibration(data_dir: Path, embedder_id: str, record: dict[str, Any]) -> Path:
    """Merge this embedder's record into the calibration file (atomically)."""
    path = calibration_path(data_dir)
    body: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            body = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            body = {}
    body[embedder_id] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------- commands
def build_cache(threshold: float | None = None, env: dict[str, str] | None = None) -> Any:
    """A PromptCache built by ``runtime.build`` exactly as the server builds it (same embedder,
    guards and threshold resolution), on an isolated in-memory store, with no LLM; its embedder
    is memoised (``MemoEmbedder``), so ``evaluate`` embeds each text once."""
    import os

    from promptcache import runtime
    from promptcache.settings import Settings

    overrides = {
        "PROMPTCACHE_STORE": "memory",
        "PROMPTCACHE_STATS": "store",
        "PROMPTCACHE_LLM": "none",
    }
    if threshold is not None:
        overrides["PROMPTCACHE_THRESHOLD"] = repr(threshold)
    settings = Settings.from_env({**(os.environ if env is None else env), **overrides})
    return runtime.build(settings, embedder=MemoEmbedder(runtime.make_embedder(settings)))


def _progress(quiet: bool) -> Progress | None:
    if quiet:
        return None
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, leave=False, mininterval=0.5)


def _run(
    path: Path,
    pairs: Sequence[Pair],
    intent_of: dict[str, int],
    *,
    threshold: float | None,
    check: int,
    seed: int,
    vector_cache: Path | None,
    quiet: bool,
    verifier: bool = True,
) -> Evaluation:
    from promptcache import guards as guard_module

    cache = build_cache(threshold)
    return evaluate(
        cache,
        pairs,
        intent_of=intent_of,
        extra_guards=dict(guard_module.ALL_GUARDS),
        verifier=_comparison_verifier(cache) if verifier else None,
        check=check,
        seed=seed,
        vector_cache=vector_cache,
        progress=_progress(quiet),
    )


def _comparison_verifier(cache: Any) -> Any:
    """The local verifier, for the verifier rows when the cache itself runs without one; None
    when it is not installed (the rows are left out)."""
    if cache.rules.verifier_model is not None:
        return None
    from promptcache.adapters.local_verifier import LocalVerifier

    try:
        return LocalVerifier(threads=2, timeout=60.0)
    except ConfigError as exc:
        log.warning("verifier rows left out: %s", exc.message)
        return None


def _describe(
    ev: Evaluation, path: Path, part: str, limit: int | None, seed: int, n_pairs: int
) -> str:
    sampled = f", whole groups drawn until {limit} pairs (seed {seed})" if limit is not None else ""
    t = ev.seconds
    agree = (
        f"; real PromptCache.lookup on {ev.checked} sampled queries agreed on {ev.agreed}"
        if ev.checked
        else ""
    )
    return (
        f"{path.name}: part {part}{sampled}: {n_pairs} pairs, {len(ev.work.entries)} stored, "
        f"{len(ev.work.queries)} queries ({int(ev.work.answerable.sum())} with their intent in the "
        f"cache); embedder {ev.embedder_id}; policy: threshold {ev.policy.threshold:.3f}, guards "
        f"{', '.join(ev.policy.guards) or 'none'}, strict guards "
        f"{', '.join(ev.policy.strict_guards) or 'off'} (band {ev.policy.strict_guards_band:g}), "
        f"verifier model "
        f"{ev.policy.model.describe() if ev.policy.model else 'off'}\n"
        f"time: embed {t['embed']:.1f}s, store {t['store']:.1f}s, search {t['search']:.1f}s, "
        f"guards {t['guards']:.1f}s, verifier {t.get('verifier', 0.0):.1f}s, "
        f"real lookups {t['check']:.1f}s{agree}"
    )


def _strict() -> list[str]:
    from promptcache.guards import strict_guards

    return [g.__name__ for g in strict_guards("on")]


def run_eval(
    path: Path,
    *,
    part: str = "all",
    limit: int | None = None,
    seed: int = 0,
    threshold: float | None = None,
    plot_path: Path | None = None,
    json_path: Path | None = None,
    check: int = 2000,
    vector_cache: Path | None = None,
    quiet: bool = False,
    verifier: bool = True,
    out: Any = None,
) -> Evaluation:
    """``promptcache eval``: print the policies side by side, the guard ablation and the bar;
    write the precision-recall plot (and a JSON report)."""
    import sys

    out = out or sys.stdout
    pairs = read_pairs(path)
    intent_of = intents(pairs)  # chains through every pair, even unsampled ones
    chosen = select(pairs, part, limit, seed)
    ev = _run(
        path,
        chosen,
        intent_of,
        threshold=threshold,
        check=check,
        seed=seed,
        vector_cache=vector_cache,
        quiet=quiet,
        verifier=verifier,
    )
    rows = list(iter_rows(ev))
    from promptcache import guards as guard_module

    print(_describe(ev, path, part, limit, seed, len(chosen)), file=out)
    print("\n" + table(rows), file=out)
    print("\nguards at the policy's threshold, each on its own:\n", file=out)
    print(table(ev.ablation(list(guard_module.ALL_GUARDS), _strict())), file=out)
    models = ev.models()
    if models:
        print("\nthe verifier model on top of the policy's guards, at its threshold:\n", file=out)
        print(table(models), file=out)
        for line in model_bars(ev, rows, models):
            print(line, file=out)
    print("\n" + bar_check(ev, rows), file=out)
    if plot_path is not None:
        title = f"{path.name.split('.')[0]} ({part}{f', {limit} pairs' if limit else ''})"
        print(f"\nwrote {plot(ev, plot_path, title)}", file=out)
    if json_path is not None:
        body = {
            "file": path.name,
            "part": part,
            "limit": limit,
            "seed": seed,
            "embedder": ev.embedder_id,
            "policies": [m.as_dict() for m in rows],
            "ablation": [
                m.as_dict() for m in ev.ablation(list(guard_module.ALL_GUARDS), _strict())
            ],
            "verifier": [m.as_dict() for m in models],
            "seconds": ev.seconds,
            "checked": ev.checked,
            "agreed": ev.agreed,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return ev


def run_calibrate(
    path: Path,
    target_precision: float,
    *,
    part: str = "fit",
    limit: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    write: bool = True,
    check: int = 0,
    vector_cache: Path | None = None,
    quiet: bool = False,
    out: Any = None,
) -> tuple[Metrics, Metrics | None, Path | None]:
    """``promptcache calibrate``: the lowest threshold whose precision (with the cache's guards)
    stays at or above the target on ``part``; reports it on the held-out half too and writes it
    to ``<data dir>/calibration.json`` under the embedder's id, where ``runtime.build`` reads it
    when PROMPTCACHE_THRESHOLD is unset."""
    import sys
    from datetime import UTC, datetime

    from promptcache import runtime

    out = out or sys.stdout
    if not 0.0 < target_precision <= 1.0:
        raise PromptCacheError(f"--target-precision must be in (0, 1], got {target_precision}")
    pairs = read_pairs(path)
    intent_of = intents(pairs)
    fit_pairs = select(pairs, part, limit, seed)
    ev = _run(
        path,
        fit_pairs,
        intent_of,
        threshold=None,
        check=check,
        seed=seed,
        vector_cache=vector_cache,
        quiet=quiet,
        verifier=False,  # only the cache's own verifier model, if any
    )
    # with the verifier model on, thresholds are swept with it (its candidates scored once)
    curve = ev.curve(ev.policy.guards, ev.policy.model)
    chosen = pick_threshold(curve, target_precision)
    if chosen is None:
        best = max(curve, key=lambda m: m.precision)
        raise PromptCacheError(
            f"no threshold reaches precision {target_precision} on {path.name} ({part}); the "
            f"highest is {best.precision:.3f} at {best.threshold:.3f}"
        )
    fit = ev.default(chosen.threshold)
    print(_describe(ev, path, part, limit, seed, len(fit_pairs)), file=out)
    held: Metrics | None = None
    if part == "fit":
        hold_pairs = select(pairs, "holdout", limit, seed)
        hev = _run(
            path,
            hold_pairs,
            intent_of,
            threshold=chosen.threshold,
            check=check,
            seed=seed,
            vector_cache=vector_cache,
            quiet=quiet,
            verifier=False,
        )
        held = hev.default(chosen.threshold)
    rows = [replace(fit, name=f"{part}: {fit.name}")]
    if held is not None:
        rows.append(replace(held, name=f"holdout: {held.name}"))
    print(
        f"\nthreshold for {ev.embedder_id} at precision >= {target_precision}: "
        f"{chosen.threshold:.3f}\n\n{table(rows)}",
        file=out,
    )
    written: Path | None = None
    if write:
        directory = data_dir if data_dir is not None else runtime.settings().data_dir
        record = {
            "threshold": chosen.threshold,
            "target_precision": target_precision,
            "file": path.name,
            "part": part,
            "limit": limit,
            "seed": seed,
            "guards": list(ev.policy.guards),
            "verifier_model": ev.policy.model.describe() if ev.policy.model else None,
            "fit": fit.as_dict(),
            "holdout": held.as_dict() if held is not None else None,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        written = write_calibration(directory, ev.embedder_id, record)
        print(
            f"\nwrote {written} (read by the cache when PROMPTCACHE_THRESHOLD is unset)", file=out
        )
    return fit, held, written
