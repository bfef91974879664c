"""`manage.py evaluate_signals`: single-signal AUCs, both scorers, the tuned choice and the curve."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

from routing.models import EvaluationResult, EvaluationRun

pytestmark = pytest.mark.django_db


def _run() -> EvaluationRun:
    """Two tiers; the check alone tells right answers (p_yes high) from wrong ones."""
    rng = random.Random(0)
    run = EvaluationRun.objects.create(
        dataset="synthetic",
        settings={"relevance_floor": 0.25},
        tiers=[
            {"name": "m", "order": 1, "price_input_per_mtok": 1.0, "price_output_per_mtok": 4.0},
            {"name": "l", "order": 2, "price_input_per_mtok": 10.0, "price_output_per_mtok": 40.0},
        ],
    )
    for n in range(40):
        answerable = n % 2 == 0
        for tier, price in (("m", 1.0), ("l", 10.0)):
            right = answerable and (tier == "l" or n % 4 == 0)
            p_yes = rng.uniform(0.6, 1.0) if right else rng.uniform(0.0, 0.4)
            # The answer costs 200 tokens, its check 20 (a tenth).
            check_cost = 20 * price / 1e6
            EvaluationResult.objects.create(
                run=run,
                question_id=f"q{n}",
                question="?",
                source="squad",
                split="fit" if n % 3 else "test",
                answerable=answerable,
                gold_answers=["gold"] if answerable else [],
                tier=tier,
                answer="gold" if right else "wrong",
                f1=1.0 if right else 0.0,
                # Without the check nothing tells right from wrong: every other signal is the
                # same on every row (noise would beat chance in some fold orders).
                signals={"check_yes": p_yes, "support": 0.5, "top_similarity": 0.6},
                top_similarity=0.6,
                cost=Decimal(str(220 * price / 1e6)),
                call_cost=Decimal(str(200 * price / 1e6)),
                check_cost=Decimal(str(check_cost)),
                latency_ms=100.0,
                attempts=[
                    {
                        "tier": tier,
                        "score": 0.5,
                        "tokens_in": 220,
                        "tokens_out": 1,
                        "check": {
                            "p_yes": p_yes,
                            "tokens_in": 20,
                            "tokens_out": 0,
                            "cost": check_cost,
                            "latency_ms": 10.0,
                            "error": "",
                        },
                    }
                ],
            )
    return run


def test_report_ranks_the_check_and_chooses_on_fit(tmp_path: Path) -> None:
    run = _run()
    out = tmp_path / "report.json"
    call_command("evaluate_signals", run.pk, "--floor", "0.3", "--json", str(out), stdout=None)
    report = json.loads(out.read_text())
    test_auc = report["signal_auc"]["l"]["test"]["right"]
    assert test_auc["check_yes"]["auc"] == 1.0
    assert test_auc["scorer_with_check"]["auc"] == 1.0
    with_check = report["policies"]["with_check"]
    # Within 0.70 of the large tier's cost, no policy keeps its F1 here: no choice is made.
    assert with_check["chosen_on_fit"] is None
    assert report["policies"]["without_check"] is None  # no scorer beats chance without it
    curve = with_check["tradeoff_test_largest_alone"]
    assert [p["thresholds"][-1] for p in curve][:3] == [0.0, 0.1, 0.2]
    # Threshold 0 on the last tier: no check paid there; a raised one pays it (a tenth).
    assert curve[0]["mean_cost"] < curve[5]["mean_cost"]
    # A good check declines near misses without losing answerable questions.
    assert curve[5]["near_miss_abstention"] == 1.0 and curve[5]["false_abstention"] == 0.0
