"""Bar charts of batch winners (matplotlib, Agg backend: works without a screen)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from maxact.errors import MaxactError, choices_text  # noqa: E402
from maxact.fsio import write_bytes_atomic  # noqa: E402
from maxact.report import show_token  # noqa: E402
from maxact.tally import Tally  # noqa: E402


def plot_tally(ax, tally: Tally, token_text, title: str, top: int = 15) -> None:
    ids = tally.token_ids[:top][::-1]
    shares = (tally.counts[:top] / tally.n_batches)[::-1]
    ax.barh([show_token(token_text(int(t))) for t in ids], shares, color="#3b6ea8")
    ax.set_xlabel("share of batches won")
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))


def image_format(path, fig) -> str:
    """The image format named by the file's suffix (png when it has none)."""
    fmt = Path(path).suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        plt.close(fig)
        raise MaxactError(f"cannot draw a plot as {Path(path).name}: unknown image suffix; use one of "
                          f"{choices_text('.' + s for s in sorted(supported))}")
    return fmt


def save_tally_plots(path, tallies: list[tuple[str, Tally]], token_text, max_plots: int = 16) -> int:
    """An image (PNG unless the suffix names another format) with one panel per unit (at most
    max_plots); returns how many were drawn."""
    tallies = tallies[:max_plots]
    n = len(tallies)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    fmt = image_format(path, fig)
    for ax, (title, tally) in zip(axes.flat, tallies):
        plot_tally(ax, tally, token_text, title)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format=fmt, dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, image.getvalue())  # the old file or the whole new one, never half
    return n
