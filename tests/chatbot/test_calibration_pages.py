"""A fit's calibration is stored with the weights' new version, shown on the tuning page as a
reliability diagram, and a version can be rolled back from the admin."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from chatbot.evaluation.fitting import run_fit
from routing.models import (
    EvaluationResult,
    EvaluationRun,
    ModelTier,
    ScorerWeights,
    ScorerWeightsVersion,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def run() -> EvaluationRun:
    """Cheap is right exactly when its min log-probability is high; big is always right."""
    for name, order in (("cheap", 1), ("big", 2)):
        ModelTier.objects.update_or_create(
            name=name,
            defaults={"base_url": "http://127.0.0.1:9/v1", "model": name, "order": order},
        )
    run = EvaluationRun.objects.create(
        dataset="synthetic",
        tiers=[{"name": "cheap", "order": 1}, {"name": "big", "order": 2}],
        settings={"relevance_floor": 0.0, "passes": {"tiers_alone": {"support_check": False}}},
        scorer_weights={"bias": 2.0},  # overconfident: every answer scored 0.88
    )
    rng = random.Random(3)
    for index in range(60):
        split = "fit" if index % 2 else "test"
        confident = index % 3 != 0
        signals = {"min_logprob": rng.uniform(-0.5, 0.0) if confident else rng.uniform(-4, -2)}
        for tier, right, cost in (("cheap", confident, 1), ("big", True, 10)):
            EvaluationResult.objects.create(
                run=run,
                question_id=f"q{index}",
                question=f"question {index}",
                source="squad",
                split=split,
                answerable=True,
                gold_answers=["gold"],
                tier=tier,
                answer="gold" if right else "other",
                f1=1.0 if right else 0.0,
                grade=1.0 if right else 0.0,
                signals=signals if tier == "cheap" else {"min_logprob": -0.1},
                top_similarity=0.8,
                cost=Decimal(cost),
                call_cost=Decimal(cost),
                latency_ms=100,
            )
    return run


def test_fit_applies_a_versioned_calibrated_scorer_and_the_page_shows_it(
    run: EvaluationRun,
    admin_client,  # noqa: ANN001
) -> None:
    result = run_fit(run=run, apply=True)
    calibration = result["fit"]["calibration"]
    before, after = calibration["before"], calibration["after"]
    assert before["rows"] == after["rows"] == 60  # 30 test questions x 2 tiers
    # The run's weights say 0.88 for everything; the fit says what the min log-prob means.
    assert after["brier"] < before["brier"]
    version = ScorerWeightsVersion.objects.get()
    assert version.number == 1 and version.calibration == calibration
    assert ScorerWeights.objects.get().version == 1
    assert "scorer weights v1" in result["applied"]

    page = admin_client.get(f"/admin/tuning/?run={run.pk}").content.decode()
    assert 'id="calibration"' in page and f"/admin/evaluations/{run.pk}/reliability.png" in page
    png = admin_client.get(f"/admin/evaluations/{run.pk}/reliability.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png.content[:4] == b"\x89PNG"


def test_an_unfitted_run_has_no_diagram_and_customers_cannot_see_one(
    run: EvaluationRun,
    admin_client,  # noqa: ANN001
    client,  # noqa: ANN001
) -> None:
    assert admin_client.get(f"/admin/evaluations/{run.pk}/reliability.png").status_code == 404
    assert (
        'id="calibration"' not in admin_client.get(f"/admin/tuning/?run={run.pk}").content.decode()
    )
    response = client.get(f"/admin/evaluations/{run.pk}/reliability.png")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_admin_rolls_back_to_an_earlier_version(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    from routing.policy import scorer_weights_write

    first = scorer_weights_write(weights={"bias": 1.0}, fitted_on="good fit")
    scorer_weights_write(weights={"bias": -5.0}, fitted_on="bad fit")
    response = admin_client.post(
        "/admin/routing/scorerweightsversion/",
        {"action": "roll_back", "_selected_action": [first.pk]},
        follow=True,
    )
    assert response.status_code == 200
    live = ScorerWeights.objects.get()
    assert live.weights == {"bias": 1.0} and live.version == 3
    assert "now uses v1" in response.content.decode()


def test_a_test_split_with_no_right_answer_is_fitted_and_stored(run: EvaluationRun) -> None:
    # Where every test answer is wrong (a small run in a language the tiers read badly), the
    # AUC on the test split has no meaning: it is stored as unknown, not as NaN, which
    # PostgreSQL's JSON refuses (the whole run failed before its cascade pass).
    EvaluationResult.objects.filter(run=run, split="test").update(answer="other", f1=0.0, grade=0.0)
    result = run_fit(run=run, apply=False)
    run.refresh_from_db()
    assert result["fit"]["test_auc"] is None
    assert run.settings["fit"]["test_auc"] is None
    assert run.settings["fit"]["weights"]
