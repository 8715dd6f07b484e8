"""The HTML report's figures, drawn with matplotlib's object API (no pyplot, no display) and
returned as PNG bytes encoded in base64, ready for a ``data:`` URI.

Each function draws one figure from arrays computed in `diagnostics`; none reads files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np

DPI = 80
ANNOTATE_MAX = 18  # heat maps with more rows than this carry no numbers in their cells (the tables do)
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _heatmap(ax, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, fmt: str, vmin: float | None, vmax: float | None, cmap: str) -> None:
    shown = np.ma.masked_invalid(matrix.astype(np.float64))
    image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(len(cols)), cols, rotation=90 if max(map(len, cols), default=0) > 3 else 0, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    if len(rows) <= ANNOTATE_MAX:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                r, g, b, _ = image.cmap(image.norm(value))
                colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"  # readable on the cell's colour
                ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7, color=colour)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def confusion_panels(matrices: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]], title: str) -> str:
    """One heat map of counts per entry (``{panel title: (k, k)}``), rows true, columns predicted."""
    fig = _figure(4.2 * len(matrices), 3.8)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, matrices.items()):
        _heatmap(ax, matrix, labels[name], labels[name], name, "d", 0, None, "Blues")
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("true", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def confusion_18(matrix: np.ndarray, labels: Sequence[str], title: str) -> str:
    """The 18 x 18 confusion heat map with counts."""
    fig = _figure(9.5, 8.5)
    ax = fig.subplots()
    _heatmap(ax, matrix, labels, labels, title, "d", 0, None, "Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _png(fig)


def per_class_bars(scores: Mapping[str, np.ndarray], labels: Sequence[str], title: str) -> str:
    """Grouped bars of per-class F1 ``{name: (k,)}`` side by side."""
    fig = _figure(11, 3.6)
    ax = fig.subplots()
    width = 0.8 / max(len(scores), 1)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(scores.items()):
        ax.bar(x + (i - (len(scores) - 1) / 2) * width, values, width, label=name, color=COLOURS[i % len(COLOURS)])
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def pair_panels(panels: Mapping[str, tuple[np.ndarray, Sequence[str]]], title: str, diverging: bool) -> str:
    """A heat map per task of a source-by-source matrix ``{task: ((s, s), names)}``: agreement in
    [0, 1], or correlation in [-1, 1] (`diverging`)."""
    fig = _figure(4.6 * len(panels), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (matrix, names)) in zip(axes, panels.items()):
        vmin, cmap = (-1.0, "RdBu_r") if diverging else (0.0, "viridis")
        _heatmap(ax, matrix, names, names, name, ".2f", vmin, 1.0, cmap)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def error_by_age(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> str:
    """Error rate against age in years ``{name: (ages, rates)}``, the 30 and 60 boundaries marked."""
    fig = _figure(9, 3.6)
    ax = fig.subplots()
    for i, (name, (ages, rates)) in enumerate(curves.items()):
        ax.plot(ages, rates, marker=".", lw=1.2, label=name, color=COLOURS[i % len(COLOURS)])
    for boundary in (30, 60):
        ax.axvline(boundary, color="#c44e52", ls="--", lw=1)
        ax.text(boundary, 1.0, f" {boundary}", color="#c44e52", va="top", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("age-band error rate")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def reliability_grid(panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str, columns: int = 4) -> str:
    """One panel per source, one curve per task: accuracy against confidence per bin
    ``{source: {task: (confidence, accuracy)}}``, with the diagonal of perfect calibration."""
    rows = max(1, -(-len(panels) // columns))
    cols = min(columns, max(1, len(panels)))
    fig = _figure(3.2 * cols, 2.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, curves) in zip(axes, panels.items()):
        ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls=":")
        for i, (task, (confidence, accuracy)) in enumerate(curves.items()):
            ok = np.isfinite(confidence)
            ax.plot(confidence[ok], accuracy[ok], marker="o", ms=3, lw=1.2, label=task, color=COLOURS[i])
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _png(fig)
