"""Is the scorer's output a probability? Brier score, reliability bins and their diagram.

The cascade compares the scorer's output with each tier's threshold, and the router rewards
it as accuracy: both read it as P(answer is right). Calibration checks that reading on labelled
rows (a test split): among answers scored about 0.7, about 70% should be right.

- `brier`: mean squared gap between score and outcome (0 is perfect; always answering 0.5
  scores 0.25);
- `reliability_bins`: equal-width score bins, each with its count, mean score and share right;
- `expected_calibration_error`: the bins' |mean score - share right|, weighted by count;
- `reliability_png`: the diagram (one curve per scorer, the diagonal is perfect calibration).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def brier(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Mean of (score - outcome)^2; None without rows."""
    if not len(scores):
        return None
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    return float(np.mean((s - y) ** 2))


def reliability_bins(
    scores: Sequence[float], labels: Sequence[bool], bins: int = 5
) -> list[dict[str, Any]]:
    """Equal-width bins over [0, 1]: lo, hi, n, mean_score and right (share right; None if empty)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The last bin is closed on the right: a score of exactly 1.0 belongs to it.
    index = np.clip(np.digitize(s, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append(
            {
                "lo": round(float(edges[b]), 4),
                "hi": round(float(edges[b + 1]), 4),
                "n": n,
                "mean_score": round(float(s[mask].mean()), 4) if n else None,
                "right": round(float(y[mask].mean()), 4) if n else None,
            }
        )
    return out


def expected_calibration_error(bins: Sequence[Mapping[str, Any]]) -> float | None:
    """Count-weighted mean |mean score - share right| over the non-empty bins."""
    total = sum(b["n"] for b in bins)
    if not total:
        return None
    return float(sum(b["n"] * abs(b["mean_score"] - b["right"]) for b in bins if b["n"]) / total)


def calibration_summary(
    scores: Sequence[float], labels: Sequence[bool], bins: int = 5
) -> dict[str, Any]:
    """Brier score, expected calibration error, bins, rows and share right (JSON-ready)."""
    table = reliability_bins(scores, labels, bins)
    value, ece = brier(scores, labels), expected_calibration_error(table)
    return {
        "rows": len(scores),
        "right": round(float(np.mean(labels)), 4) if len(labels) else None,
        "brier": None if value is None else round(value, 4),
        "ece": None if ece is None else round(ece, 4),
        "bins": table,
    }


def reliability_png(curves: Mapping[str, Mapping[str, Any]], *, title: str) -> bytes:
    """The reliability diagram of each `calibration_summary` in `curves` (label -> summary)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.2), dpi=100)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle=":", color="#888", label="perfectly calibrated")
    for label, summary in curves.items():
        points = [(b["mean_score"], b["right"], b["n"]) for b in summary["bins"] if b["n"]]
        if not points:
            continue
        xs, ys, ns = zip(*points, strict=True)
        brier_text = "n/a" if summary.get("brier") is None else f"{summary['brier']:.3f}"
        axes.plot(xs, ys, marker="o", label=f"{label} (Brier {brier_text})")
        for x, y, n in points:
            axes.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("scorer's P(right), bin mean")
    axes.set_ylabel("share of answers right")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
