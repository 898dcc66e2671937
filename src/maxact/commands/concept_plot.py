"""`maxact concept --plot`: a volcano plot of every unit tested (Cohen's d against -log10 p), or, with
--by, histograms of the chosen units' observations by group (matplotlib, Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from maxact.analysis.concept import AnovaTable, ConceptTable, by_decreasing, volcano_points  # noqa: E402
from maxact.errors import MaxactError  # noqa: E402
from maxact.plot import image_format  # noqa: E402

LABELLED = 8  # units named beside their point: the largest t, then the smallest


def _image(fig, path) -> bytes:
    fmt = image_format(path, fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    plt.close(fig)
    return buf.getvalue()


def volcano_png(path, table: ConceptTable, q_threshold: float) -> bytes:
    """x: Cohen's d; y: -log10 p (analysis/concept.py's ``volcano_points``: p of 0 drawn at the smallest
    positive p, units with an undefined d or p left out); units with q below the threshold in colour,
    the most extreme t named."""
    s = table.stats
    ok, y = volcano_points(s)
    hit = ok & (s.q < q_threshold)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(s.d[ok & ~hit], y[ok & ~hit], s=3, c="#9aa4b1", alpha=0.5, linewidths=0,
               label=f"q >= {q_threshold}")
    ax.scatter(s.d[hit], y[hit], s=4, c="#c0392b", alpha=0.7, linewidths=0, label=f"q < {q_threshold}")
    order = by_decreasing(s.t)
    finite = order[np.isfinite(s.t[order])]
    for i in list(finite[: LABELLED // 2]) + list(finite[::-1][: LABELLED // 2]):
        if ok[i]:
            ax.annotate(table.units[i], (s.d[i], y[i]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("Cohen's d (category minus rest)")
    ax.set_ylabel("-log10 p (Welch)")
    ax.set_title(f"{table.category}\n{int(hit.sum())} of {len(table.units)} units with q < {q_threshold}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return _image(fig, path)


def histograms_png(path, table: AnovaTable, histograms: list[dict]) -> bytes:
    """One panel per chosen unit: the share of each group's observations in each histogram bin
    (bins of docs/STORE.md's histogram, drawn at their geometric middles)."""
    if not histograms:
        raise MaxactError("--plot with --by draws the histograms of the units given with --unit; give at least one")
    n = len(histograms)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows), squeeze=False)
    for ax, h in zip(axes.flat, histograms):
        x = np.arange(len(h["bounds"]))
        for name, counts in h["counts"].items():
            c = np.asarray(counts, dtype=np.float64)
            if c.sum():
                ax.plot(x, c / c.sum(), drawstyle="steps-mid", label=name, linewidth=1.2)
        ticks = x[:: max(1, len(x) // 6)]
        ax.set_xticks(ticks, [f"{h['bounds'][i][0]:.2g}" for i in ticks], fontsize=7)
        ax.set_title(f"{h['unit']} by {table.prop}", fontsize=9)
        ax.set_ylabel("share of the group", fontsize=8)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _image(fig, path)
