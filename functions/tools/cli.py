"""``promptcache``: serve, warm, stats, clear, compact, reindex, settings. Same settings and data
location as the server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptcache._errors import PromptCacheError


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(args.host, args.port)
    return 0


def _read_warm_file(path: Path, default_model: str) -> list[tuple[str, str, str]]:
    from ._jsonl import json_objects, require_text  # not shipped with the streaming function

    return [
        (
            require_text(path, lineno, obj, "prompt"),
            require_text(path, lineno, obj, "response"),
            require_text(path, lineno, obj, "model", default_model),
        )
        for lineno, obj in json_objects(path)
    ]


def _cmd_warm(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from promptcache import runtime
    from promptcache._types import ChatRequest, Completion, Message, Usage

    settings = runtime.settings()
    rows = _read_warm_file(Path(args.file), settings.model)  # all validated before any write
    cache = runtime.cache()
    batch = 64
    with tqdm(total=len(rows), unit="entry", desc="warming", disable=args.quiet) as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            vectors = cache.embed_many([p for p, _, _ in chunk])
            for (prompt, response, model), vector in zip(chunk, vectors, strict=True):
                request = ChatRequest(messages=(Message("user", prompt),), model=model)
                cache.store_answer(request, Completion(response, model, Usage()), vector=vector)
            bar.update(len(chunk))
    print(f"stored {len(rows)} entries", file=sys.stderr)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from promptcache import runtime

    print(json.dumps(runtime.cache().report(), indent=2))
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    from promptcache import runtime

    removed = runtime.cache().clear()
    print(f"removed {removed} entries and reset the stats", file=sys.stderr)
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from promptcache import runtime

    store = runtime.cache().store
    compact = getattr(store, "compact", None)
    if compact is None:
        raise PromptCacheError(f"the {runtime.settings().store} store keeps no log to compact")
    removed = compact()
    print(f"compacted the vector log ({removed} dropped)", file=sys.stderr)
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    import time

    from promptcache import runtime
    from promptcache._errors import StoreError
    from promptcache._indexes import reindex

    settings = runtime.settings()
    if settings.index == "process":
        raise PromptCacheError(
            "PROMPTCACHE_INDEX is process: each process loads the vectors from the store "
            "itself, there is nothing to reindex (set PROMPTCACHE_INDEX=redis or upstash-vector "
            "and its connection settings)"
        )
    store, _ = runtime.STORES[settings.store](settings)
    index = runtime.INDEXES[settings.index](settings)
    assert index is not None
    started = time.perf_counter()
    try:
        done = reindex(store, index, time.time())
    except StoreError as exc:
        why = f"reindex into the {settings.index} index failed: {exc.message}"
        raise PromptCacheError(why) from exc
    finally:
        for backend in (index, store):
            close = getattr(backend, "close", None)
            if close is not None:
                close()
    seconds = time.perf_counter() - started
    print(
        f"reindexed {done.entries} entries of {done.namespaces} namespaces into the "
        f"{settings.index} index in {seconds:.2f} s ({done.without_vector} live entries "
        "without a vector in the store)",
        file=sys.stderr,
    )
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from promptcache._settings_table import SETTINGS

    print("| setting | default | meaning |\n|---|---|---|")
    for name, (default, meaning) in SETTINGS.items():
        print(f"| `{name}` | {f'`{default}`' if default else ''} | {meaning} |")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.commands import run_eval

    run_eval(
        Path(args.file),
        part=args.part,
        limit=args.limit,
        seed=args.seed,
        threshold=args.threshold,
        plot_path=None if args.no_plot else Path(args.plot),
        json_path=args.json and Path(args.json),
        check=args.check,
        vector_cache=args.vector_cache and Path(args.vector_cache),
        quiet=args.quiet,
        verifier=not args.no_verifier,
    )
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .evaluation.commands import run_calibrate

    run_calibrate(
        Path(args.file),
        args.target_precision,
        part=args.part,
        limit=args.limit,
        seed=args.seed,
        write=not args.dry_run,
        vector_cache=args.vector_cache and Path(args.vector_cache),
        quiet=args.quiet,
    )
    return 0


def _pairs_args(p: argparse.ArgumentParser, part: str) -> None:
    p.add_argument(
        "file", help='labelled pairs: one {"id", "a", "b", "duplicate"} object a line (.gz ok)'
    )
    p.add_argument(
        "--part",
        choices=("all", "fit", "holdout"),
        default=part,
        help=f"which half of the pairs (split by connected texts; default {part})",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="whole groups of linked texts, drawn in a seeded order until at least N pairs",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--vector-cache",
        default=None,
        metavar="DIR",
        help="keep vectors here (by embedder and text hash) so reruns skip embedding",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptcache", description="A semantic cache for LLM APIs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "serve", help="run the HTTP API locally (the Lambda handlers behind a local server)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("warm", help="store prompt/response pairs from a JSONL file")
    p.add_argument("file", help='one {"prompt", "response", "model"?} object a line')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_warm)
    p = sub.add_parser("stats", help="print the cache's statistics as JSON")
    p.set_defaults(func=_cmd_stats)
    p = sub.add_parser("clear", help="delete every entry and reset the statistics")
    p.set_defaults(func=_cmd_clear)
    p = sub.add_parser(
        "compact", help="drop expired entries and dead vector-log records (readers reload)"
    )
    p.set_defaults(func=_cmd_compact)
    p = sub.add_parser(
        "reindex",
        help="copy every live entry's vector from the store into the server-side index "
        "(after switching PROMPTCACHE_INDEX from process)",
    )
    p.set_defaults(func=_cmd_reindex)
    p = sub.add_parser("settings", help="print every setting as a Markdown table")
    p.set_defaults(func=_cmd_settings)
    p = sub.add_parser(
        "eval", help="measure hit rate, precision, recall and false hits on labelled pairs"
    )
    _pairs_args(p, "all")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the policy's threshold (default: as configured)",
    )
    p.add_argument("--plot", default="promptcache-pr.png", help="precision-recall PNG to write")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument(
        "--no-verifier",
        action="store_true",
        help="leave out the verifier model's rows (they score every candidate with it)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--check",
        type=int,
        default=2000,
        help="queries also asked through the real lookup path (default 2000; 0 = none)",
    )
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser(
        "calibrate", help="pick the threshold meeting a target precision and save it"
    )
    _pairs_args(p, "fit")
    p.add_argument("--target-precision", type=float, required=True, metavar="P")
    p.add_argument("--dry-run", action="store_true", help="print the threshold, write nothing")
    p.set_defaults(func=_cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PromptCacheError as exc:
        print(f"promptcache: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"promptcache: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
