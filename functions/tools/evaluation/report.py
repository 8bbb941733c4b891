"""The report of an evaluation: Markdown tables, the bar lines and the precision-recall plot."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from promptcache._errors import ConfigError

from .metrics import Metrics
from .policy import GRID, MODEL_POLICIES, PEERS, Model
from .simulation import Evaluation


def table(rows: Sequence[Metrics]) -> str:
    """A Markdown table of policies."""
    lines = [
        "| policy | threshold | hit rate | precision | recall | false hits / 1k | on labelled "
        "pairs / 1k |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        lines.append(
            f"| {m.name} | {m.threshold:.3f} | {m.hit_rate:.3f} | {m.precision:.3f} | "
            f"{m.recall:.3f} | {m.false_hits_per_1k:.1f} | {m.labelled_false_per_1k:.1f} |"
        )
    return "\n".join(lines)


def bar_check(ev: Evaluation, rows: Sequence[Metrics]) -> str:
    """The bar: at the recall of the best fixed peer threshold (highest F1), at most half its
    false hits. Also compares with the fixed threshold of equal recall."""
    mine = ev.default()
    best = _best_peer(rows)
    iso = iso_recall_false_hits(ev.curve(), mine.recall)
    meets = mine.recall >= best.recall - 1e-9 and mine.false_hits <= best.false_hits / 2
    return (
        f"best fixed peer threshold (F1): {best.name}: recall {best.recall:.3f}, "
        f"{best.false_hits_per_1k:.1f} false hits/1k\n"
        f"promptcache default: recall {mine.recall:.3f}, "
        f"{mine.false_hits_per_1k:.1f} false hits/1k "
        f"({mine.false_hits / best.false_hits if best.false_hits else 0:.0%} of it): "
        f"{'meets' if meets else 'misses'} the bar (recall >= its recall, false hits <= half)\n"
        f"a fixed threshold at the default's recall: {iso:.1f} false hits/1k "
        f"(the default has {mine.false_hits_per_1k / iso if iso else 0:.0%} of it)\n"
        f"counting only false hits on labelled pairs: {best.name} "
        f"{best.labelled_false_per_1k:.1f}/1k, promptcache default "
        f"{mine.labelled_false_per_1k:.1f}/1k"
    )


def _best_peer(rows: Sequence[Metrics]) -> Metrics:
    def f1(m: Metrics) -> float:
        return (
            2 * m.precision * m.recall / (m.precision + m.recall) if m.precision + m.recall else 0.0
        )

    return max(rows[: len(PEERS)], key=f1)


def model_bars(ev: Evaluation, rows: Sequence[Metrics], models: Sequence[Metrics]) -> list[str]:
    """For each verifier policy: the lowest threshold at which it reaches the best peer's recall,
    and its false hits there against half the peer's (the bar, if it were the default)."""
    best = _best_peer(rows)
    out = [
        f"\nat the recall of {best.name} ({best.recall:.3f}; bar: <= "
        f"{best.false_hits_per_1k / 2:.1f} false hits/1k), each verifier policy's highest "
        "threshold reaching it:\n",
        "| policy | threshold | hit rate | precision | recall | false hits / 1k | on labelled "
        "pairs / 1k | bar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, model), _ in zip(MODEL_POLICIES, models, strict=True):
        found = None
        for t in GRID[::-1]:
            if float(t) - model.below < 0.5:
                break
            m = ev.metrics(name, float(t), ev.policy.guards, model)
            if m.recall >= best.recall - 1e-9:
                found = m
                break
        if found is None:
            out.append(f"| {name} | - | - | - | - | - | - | never reaches it |")
            continue
        verdict = "meets" if found.false_hits <= best.false_hits / 2 else "misses"
        out.append(
            f"| {name} | {found.threshold:.3f} | {found.hit_rate:.3f} | {found.precision:.3f} | "
            f"{found.recall:.3f} | {found.false_hits_per_1k:.1f} | "
            f"{found.labelled_false_per_1k:.1f} | {verdict} |"
        )
    return out


def iso_recall_false_hits(fixed: Sequence[Metrics], recall: float) -> float:
    """False hits per 1,000 queries of a fixed threshold at the given recall (interpolated along
    the fixed-threshold curve; its highest-recall point when the recall is beyond it)."""
    points = sorted((m.recall, m.false_hits_per_1k) for m in fixed)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return float(np.interp(recall, xs, ys))


def plot(ev: Evaluation, path: Path, title: str) -> Path:
    """Precision-recall curves (fixed threshold vs this cache's policy) with each peer's and the
    default's operating point. Needs matplotlib (the ``dev`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    except ImportError as exc:
        raise ConfigError(
            "writing the precision-recall plot needs matplotlib: pip install 'promptcache[dev]' "
            "(or pass --no-plot)"
        ) from exc
    fixed = ev.curve()
    mine = ev.curve(ev.policy.guards)
    model = ev.policy.model or (Model(below=0.10) if ev.cands.scores is not None else None)
    lowest = (
        float(np.nanmin(np.where(np.isnan(ev.cands.scores), np.inf, ev.cands.sims)))
        if (ev.cands.scores is not None and not np.isnan(ev.cands.scores).all())
        else 1.0
    )
    checked = (
        [
            ev.metrics("curve", float(t), ev.policy.guards, model)
            for t in GRID
            if float(t) - model.below >= lowest - 1e-6
        ]
        if model is not None
        else []
    )
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=100)
    for axis, y in ((ax, "precision"), (bx, "false_hits_per_1k")):
        axis.plot(
            [m.recall for m in fixed],
            [getattr(m, y) for m in fixed],
            color="0.55",
            lw=1.5,
            label="fixed cosine threshold",
        )
        axis.plot(
            [m.recall for m in mine],
            [getattr(m, y) for m in mine],
            color="tab:blue",
            lw=1.8,
            label="promptcache guards (threshold swept)",
        )
        if checked and model is not None:
            axis.plot(
                [m.recall for m in checked],
                [getattr(m, y) for m in checked],
                color="tab:green",
                lw=1.8,
                label=f"guards + verifier ({model.describe()}; threshold swept)",
            )
        for (name, _), m, marker in zip(PEERS, ev.peers(), "os^vD", strict=True):
            axis.scatter(
                [m.recall], [getattr(m, y)], marker=marker, s=30, color="0.3", zorder=3, label=name
            )
        d = ev.default()
        axis.scatter(
            [d.recall],
            [getattr(d, y)],
            marker="*",
            s=140,
            color="tab:red",
            zorder=4,
            label=f"promptcache default ({d.threshold:.2f})",
        )
        axis.set_xlabel("recall")
        axis.grid(alpha=0.3)
    ax.set_ylabel("precision")
    bx.set_ylabel("false hits per 1,000 queries")
    bx.set_yscale("log")
    bx.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bx.yaxis.set_major_formatter(ScalarFormatter())
    bx.yaxis.set_minor_formatter(NullFormatter())
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def iter_rows(ev: Evaluation) -> Iterator[Metrics]:
    yield from ev.peers()
    yield ev.default()
