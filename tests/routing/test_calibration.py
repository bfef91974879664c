"""Calibration figures: Brier score, reliability bins, ECE and the diagram."""

from __future__ import annotations

import pytest

from routing.evaluation.calibration import (
    brier,
    calibration_summary,
    expected_calibration_error,
    reliability_bins,
    reliability_png,
)


def test_brier_is_zero_when_sure_and_right_and_a_quarter_at_one_half() -> None:
    assert brier([1.0, 0.0], [True, False]) == 0.0
    assert brier([0.5, 0.5, 0.5], [True, False, True]) == pytest.approx(0.25)
    assert brier([1.0], [False]) == 1.0
    assert brier([], []) is None


def test_bins_hold_counts_mean_scores_and_share_right() -> None:
    scores = [0.05, 0.15, 0.9, 0.95, 1.0, 0.5]
    labels = [False, False, True, False, True, True]
    bins = reliability_bins(scores, labels, bins=5)
    assert [b["n"] for b in bins] == [2, 0, 1, 0, 3]  # 1.0 falls in the last bin
    assert bins[0]["mean_score"] == pytest.approx(0.1) and bins[0]["right"] == 0.0
    assert bins[1]["mean_score"] is None and bins[1]["right"] is None
    assert bins[4]["right"] == pytest.approx(2 / 3, abs=1e-4)
    # ECE: |0.1 - 0|*2 + |0.5 - 1|*1 + |0.95 - 2/3|*3, over 6.
    expected = (0.2 + 0.5 + 3 * abs(0.95 - 2 / 3)) / 6
    assert expected_calibration_error(bins) == pytest.approx(expected, abs=1e-3)


def test_an_overconfident_scorer_has_a_worse_brier_than_a_calibrated_one() -> None:
    labels = [True] * 6 + [False] * 4  # 60% right
    calibrated = calibration_summary([0.6] * 10, labels)
    overconfident = calibration_summary([0.99] * 10, labels)
    assert calibrated["brier"] < overconfident["brier"]
    assert calibrated["ece"] == pytest.approx(0.0) and overconfident["ece"] > 0.3
    assert calibrated["rows"] == 10 and calibrated["right"] == 0.6


def test_the_diagram_is_a_png() -> None:
    labels = [True, False, True, True, False]
    png = reliability_png(
        {
            "before": calibration_summary([0.9, 0.8, 0.7, 0.95, 0.6], labels),
            "after": calibration_summary([0.7, 0.3, 0.6, 0.8, 0.2], labels),
        },
        title="test rows",
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
