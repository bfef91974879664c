"""Evaluation run pages, the tuning page and command, applying a policy, and the demo data."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from chatbot.budget import budget_spent_today
from chatbot.dashboard import dashboard_data, period_parse
from chatbot.models import Conversation
from routing.models import EvaluationResult, EvaluationRun, ModelTier

pytestmark = pytest.mark.django_db

# The hand-checked run of tests/routing/test_tuning.py: cheap costs 1, big 10 per question.
HAND_ROWS = [
    ("q1", True, (0.9, 1.0), (0.8, 1.0)),
    ("q2", True, (0.3, 0.0), (0.9, 1.0)),
    ("q3", False, (0.2, 0.0), (0.2, 0.0)),
    ("q4", True, (0.6, 0.5), (0.7, 1.0)),
]


@pytest.fixture
def run() -> EvaluationRun:
    for name, order in (("cheap", 10), ("big", 20)):
        ModelTier.objects.create(
            name=name, base_url="http://127.0.0.1:9/v1", model=name, order=order, threshold=0.0
        )
    run = EvaluationRun.objects.create(
        dataset="hand.jsonl",
        tiers=[{"name": "big", "order": 20}, {"name": "cheap", "order": 10}],
        thresholds={"cheap": 0.5, "big": 0.0},
        status=EvaluationRun.Status.COMPLETE,
    )
    for qid, answerable, cheap, big in HAND_ROWS:
        for tier, (score, grade), cost in (("cheap", cheap, 1), ("big", big, 10)):
            EvaluationResult.objects.create(
                run=run,
                question_id=qid,
                question=qid,
                source="squad",
                answerable=answerable,
                tier=tier,
                score=score,
                grade=grade,
                f1=grade,
                cost=Decimal(cost),
                latency_ms=100,
            )
    # The real cascade's own rows: stored, shown as they are, never replayed.
    for qid, answerable, *_ in HAND_ROWS:
        EvaluationResult.objects.create(
            run=run,
            question_id=qid,
            question=qid,
            source="squad",
            answerable=answerable,
            tier="cascade",
            grade=1.0,
            cost=Decimal(3),
            latency_ms=100,
        )
    return run


def test_run_page_shows_tiers_cascade_and_replayed_thresholds(
    run: EvaluationRun, admin_client
) -> None:  # noqa: ANN001
    page = admin_client.get(f"/admin/evaluations/{run.id}/").content.decode()
    assert "cheap alone" in page and "big alone" in page
    assert "cascade (as run)" in page and "run&#x27;s thresholds, replayed" in page
    # cheap alone: F1 0.375 at 0.10 of big's cost; the run's thresholds replay to 0.625.
    assert "0.375" in page and "0.10" in page and "0.625" in page
    listing = admin_client.get("/admin/evaluations/").content.decode()
    assert f"#{run.id}" in listing and "hand.jsonl" in listing
    assert admin_client.get("/admin/evaluations/999999/").status_code == 302


def test_dashboard_accuracy_comes_from_the_latest_run(run: EvaluationRun) -> None:
    evaluation = dashboard_data(period=period_parse(period="today"))["accuracy"]["evaluation"]
    assert evaluation["id"] == run.id
    by_label = {p["label"]: p for p in evaluation["policies"]}
    assert by_label["big alone"]["f1"] == pytest.approx(0.75)
    assert by_label["cascade (as run)"]["mean_cost"] == pytest.approx(3.0)
    assert by_label["cascade (as run)"]["cost_vs_largest"] == pytest.approx(0.3)


def test_tuning_page_optimises_and_applies(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    page = admin_client.get("/admin/tuning/", {"run": run.id, "budget": "6"}).content.decode()
    assert 'id="chosen"' in page and 'id="chart-curve"' in page
    chart = json.loads(
        page.split('<script id="tuning-data" type="application/json">')[1].split("</script>")[0]
    )
    assert chart["chosen"]["tiers"] == ["cheap", "big"]
    assert (chart["chosen"]["f1"], chart["chosen"]["mean_cost"]) == pytest.approx((0.875, 6.0))
    assert chart["current"]["tiers"] == ["cheap", "big"]  # both enabled, thresholds 0
    assert {p["label"] for p in chart["singles"]} == {"cheap alone", "big alone"}
    assert chart["frontier"][-1]["f1"] == 1.0
    # Nothing under a budget below the cheapest tier.
    page = admin_client.get("/admin/tuning/", {"run": run.id, "budget": "0.5"}).content.decode()
    assert 'id="not-found"' in page

    thresholds = ",".join(str(t) for t in chart["chosen"]["thresholds"])
    response = admin_client.post(
        f"/admin/tuning/?run={run.id}", {"tiers": "cheap,big", "thresholds": thresholds}
    )
    assert response.status_code == 302
    tiers = {t.name: t for t in ModelTier.objects.all()}
    assert tiers["cheap"].threshold == pytest.approx(chart["chosen"]["thresholds"][0])
    assert tiers["big"].threshold == pytest.approx(chart["chosen"]["thresholds"][1])
    # A one-tier policy disables the other tier.
    admin_client.post("/admin/tuning/", {"tiers": "big", "thresholds": "0.25"})
    tiers = {t.name: t for t in ModelTier.objects.all()}
    assert not tiers["cheap"].enabled and tiers["big"].enabled and tiers["big"].threshold == 0.25
    # Bad input changes nothing.
    admin_client.post("/admin/tuning/", {"tiers": "nope", "thresholds": "0.5"})
    admin_client.post("/admin/tuning/", {"tiers": "big", "thresholds": "7"})
    assert ModelTier.objects.get(name="big").threshold == 0.25


def test_tune_thresholds_command(run: EvaluationRun) -> None:
    out = io.StringIO()
    call_command("tune_thresholds", "--run", str(run.id), "--budget", "6", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["chosen"]["tiers"] == ["cheap", "big"]
    assert report["chosen"]["f1"] == pytest.approx(0.875)
    out = io.StringIO()
    call_command(
        "tune_thresholds", "--run", str(run.id), "--target-f1", "1.0", "--apply", stdout=out
    )
    assert "CHOSEN" in out.getvalue() and "applied:" in out.getvalue()
    cheap = ModelTier.objects.get(name="cheap")
    # F1 1.0 at 8.5 per question needs cheap to accept only q1 (score 0.9).
    assert 0.6 < cheap.threshold <= 0.9
    with pytest.raises(CommandError):
        call_command(
            "tune_thresholds", "--run", str(run.id), "--target-f1", "1.5", stdout=io.StringIO()
        )
    with pytest.raises(CommandError):
        call_command("tune_thresholds", "--run", "999999", "--budget", "1", stdout=io.StringIO())


def test_upload_queues_an_evaluation(admin_client) -> None:  # noqa: ANN001
    from django_tasks_db.models import DBTaskResult

    good = b'{"id": "1", "question": "Who?", "answers": ["Rollo"], "answerable": true, "passage_id": "p"}\n'
    response = admin_client.post(
        "/admin/evaluations/", {"questions": SimpleUploadedFile("q.jsonl", good), "limit": "1"}
    )
    assert response.status_code == 302
    task = DBTaskResult.objects.get()
    assert (
        task.task_path.endswith("evaluation_run_task") and task.args_kwargs["kwargs"]["limit"] == 1
    )
    admin_client.post(
        "/admin/evaluations/", {"questions": SimpleUploadedFile("q.jsonl", b"not json")}
    )
    assert DBTaskResult.objects.count() == 1


def test_demo_traffic_is_labelled_idempotent_and_off_budget() -> None:
    call_command(
        "setup_demo", "--no-admin", "--no-knowledge", "--no-demo-traffic", stdout=io.StringIO()
    )
    out = io.StringIO()
    call_command("load_demo_traffic", "--days", "5", "--per-day", "20", stdout=out)
    assert "DEMO answers" in out.getvalue()
    week = dashboard_data(period=period_parse(period="7d"))
    assert week["questions"] > 50 and week["demo_answers"] == week["questions"]
    assert week["cost"] > 0 and week["savings"] > 0 and week["cache_hit_rate"] > 0
    assert budget_spent_today() == 0  # demo money is not real money
    demo_run = EvaluationRun.objects.get(settings__demo=True)
    assert "DEMO" in demo_run.name and demo_run.results.count() == 200 * 3
    count = Conversation.objects.count()
    call_command("load_demo_traffic", stdout=io.StringIO())
    assert Conversation.objects.count() == count
    call_command("load_demo_traffic", "--clear", stdout=io.StringIO())
    assert not Conversation.objects.exists() and not EvaluationRun.objects.exists()


def test_applying_warns_when_the_starting_tier_would_skip_cheaper_ones(
    run: EvaluationRun,
    settings,  # noqa: ANN001
) -> None:
    from chatbot.evaluations import tiers_apply_policy

    settings.CASCADE_START_TIER = "big"
    summary = tiers_apply_policy(tiers=["cheap", "big"], thresholds=[0.5, 0.0])
    assert any("CASCADE_START_TIER=big skips cheap" in line for line in summary)
    settings.CASCADE_START_TIER = "cheap"
    summary = tiers_apply_policy(tiers=["cheap", "big"], thresholds=[0.5, 0.0])
    assert not any("warning" in line for line in summary)


def test_tuning_on_one_split(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    EvaluationResult.objects.filter(run=run, question_id__in=["q1", "q2"]).update(split="fit")
    out = io.StringIO()
    call_command(
        "tune_thresholds",
        "--run",
        str(run.id),
        "--budget",
        "10",
        "--split",
        "fit",
        "--json",
        stdout=out,
    )
    report = json.loads(out.getvalue())
    # q1 and q2 only: cheap ≥ t for q1 (0.9) and big for q2 gives F1 1.0 at (1 + 11) / 2 = 6.
    assert report["questions"] == 2 and report["split"] == "fit"
    assert (report["chosen"]["f1"], report["chosen"]["mean_cost"]) == pytest.approx((1.0, 6.0))
    page = admin_client.get("/admin/tuning/", {"run": run.id, "split": "test"}).content.decode()
    assert "over 2 questions" in page


def test_run_page_refreshes_only_while_running(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    assert (
        'http-equiv="refresh"'
        not in admin_client.get(f"/admin/evaluations/{run.id}/").content.decode()
    )
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.RUNNING)
    assert (
        'http-equiv="refresh"' in admin_client.get(f"/admin/evaluations/{run.id}/").content.decode()
    )


def test_tuning_warns_when_the_choice_declines_most_answerable_questions(
    run: EvaluationRun,
    admin_client,  # noqa: ANN001
) -> None:
    # Unanswerable questions are the majority and get confident wrong answers: keeping only
    # the surest answer (q1) and declining the rest then wins F1 on all questions.
    EvaluationResult.objects.filter(run=run, question_id="q1", tier="cheap").update(score=0.99)
    for n in range(6):
        for tier, cost in (("cheap", 1), ("big", 10)):
            EvaluationResult.objects.create(
                run=run,
                question_id=f"u{n}",
                question="?",
                source="squad",
                answerable=False,
                tier=tier,
                score=0.95,
                grade=0.0,
                cost=Decimal(cost),
                latency_ms=100,
            )
    page = admin_client.get("/admin/tuning/", {"run": run.id, "budget": "1"}).content.decode()
    assert 'id="declines-warning"' in page
    page = admin_client.get(
        "/admin/tuning/", {"run": run.id, "budget": "1", "objective": "answerable_f1"}
    ).content.decode()
    assert 'id="chosen"' in page and 'id="declines-warning"' not in page
