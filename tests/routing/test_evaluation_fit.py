"""routing.evaluation.fit: the logistic fit and the cross-validated choice of features."""

from __future__ import annotations

import random

import pytest

from routing.evaluation.fit import auc, scorer_fit, scorer_select
from routing.scorer import DEFAULT_WEIGHTS


def test_fit_learns_which_signal_separates_right_from_wrong() -> None:
    signals = [dict(support=s, top_similarity=0.5) for s in (0.9, 0.8, 0.95, 0.1, 0.2, 0.05)]
    labels = [True, True, True, False, False, False]
    report = scorer_fit(signals=signals, labels=labels, l2=0.1)
    assert report.weights["support"] > 0
    assert report.auc == 1.0 and report.rows == 6 and report.positives == 3
    assert set(report.weights) == set(DEFAULT_WEIGHTS)
    with pytest.raises(ValueError):
        scorer_fit(signals=signals[:3], labels=labels[:3])
    assert auc([0.9, 0.1], [True, False]) == 1.0


def test_select_never_picks_a_scorer_no_better_than_chance() -> None:
    # One noise signal, 78 rows (20 right): its stratified CV AUC is below 0.5, so nothing is
    # chosen and the caller keeps its weights (a pooled estimate chose such scorers before).
    rng = random.Random(1)
    signals = [{"support": rng.random()} for _ in range(78)]
    labels = [i < 20 for i in range(78)]
    report, cv = scorer_select(signals=signals, labels=labels, repeats=3)
    assert report is None
    assert cv["support"] <= 0.5 and cv["all"] <= 0.5


def test_select_finds_a_single_informative_signal() -> None:
    # One weak but real signal among noise: stratified, repeated CV keeps it above chance.
    rng = random.Random(5)
    labels = [i % 4 == 0 for i in range(80)]
    signals = [
        {"support": (0.6 if y else 0.4) + rng.gauss(0, 0.15), "coverage": rng.random()}
        for y in labels
    ]
    report, cv = scorer_select(signals=signals, labels=labels, repeats=3)
    assert report is not None and report.cv_auc is not None and report.cv_auc > 0.5
    assert cv["support"] > 0.6
    assert report.weights["support"] > 0
