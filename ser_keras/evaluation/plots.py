"""Figures in the style of the paper: Fig. 3 (confusion matrices) and Fig. 4 (WA per experiment).

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``), never through
pyplot: no display is needed, the global backend is left alone (a notebook keeps its inline
plots after ``fit``), and no figure is registered anywhere, so long runs accumulate none.
"""

from __future__ import annotations

import pathlib
import typing

import numpy as np
from matplotlib.figure import Figure

from ser_keras.metrics import metrics_title, row_normalized


def _figure(width: float, height: float):
    """(figure, axes) without pyplot (PNG output through the Agg canvas savefig picks)."""
    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def confusion_figure(cm_counts, labels: typing.Sequence[str], title: str = ""):
    """Row-normalised % confusion matrix, darker = higher, each cell annotated (paper Fig. 3)."""
    percent = row_normalized(np.asarray(cm_counts))
    n = len(labels)
    size = max(3.6, 0.75 * n + 1.8)
    fig, ax = _figure(size + 0.8, size)
    image = ax.imshow(percent, cmap="Blues", vmin=0.0, vmax=100.0)
    ax.set_xticks(range(n), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_xlabel("recognised emotion")
    ax.set_ylabel("true emotion")
    for i in range(n):
        for j in range(n):
            value = percent[i, j]
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if value > 55 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    return path


def save_confusion_png(cm_counts, labels, path, wa: float, ua: float, protocol: str, prefix: str = ""):
    fig = confusion_figure(cm_counts, labels, metrics_title(wa, ua, protocol, prefix))
    return save_figure(fig, path)


def experiment_bars(rows: typing.Sequence[dict], path: pathlib.Path, title: str,
                    paper: typing.Optional[typing.Mapping[str, float]] = None) -> pathlib.Path:
    """Fig. 4 analogue: WA and UA (%) per experiment as grouped bars; the paper's WA as a marker
    where it is known numerically."""
    names = [r["name"] for r in rows]
    wa = [100 * r["wa"] for r in rows]
    ua = [100 * r["ua"] for r in rows]
    x = np.arange(len(names))
    fig, ax = _figure(max(4.5, 1.3 * len(names) + 2), 3.6)
    bars_wa = ax.bar(x - 0.2, wa, 0.4, label="WA", color="#2b6ca3")
    bars_ua = ax.bar(x + 0.2, ua, 0.4, label="UA", color="#9ecae1")
    for bars in (bars_wa, bars_ua):
        for bar in bars:
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.8, f"{bar.get_height():.1f}",
                    ha="center", va="bottom", fontsize=7)
    if paper:
        for i, name in enumerate(names):
            if name in paper:
                ax.plot([i - 0.4, i], [paper[name]] * 2, color="#c0392b", lw=2,
                        label="paper WA" if i == names.index(name) else None)
    ax.set_xticks(x, labels=names)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    handles, legend_labels = ax.get_legend_handles_labels()
    unique = dict(zip(legend_labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_plot(x_values, ua_values, wa_values, path: pathlib.Path, xlabel: str, title: str) -> pathlib.Path:
    """UAR (and WA) against a swept setting, e.g. context frames per block."""
    fig, ax = _figure(4.8, 3.4)
    ax.plot(x_values, [100 * v for v in ua_values], "o-", label="UA (UAR)", color="#2b6ca3")
    ax.plot(x_values, [100 * v for v in wa_values], "s--", label="WA", color="#9ecae1")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
