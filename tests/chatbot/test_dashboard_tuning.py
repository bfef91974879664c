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
from routing.models import EvaluationResult, EvaluationRun, ModelTier, ScorerWeights
from routing.policy import relevance_floor

pytestmark = pytest.mark.django_db

# (question, answerable, source, top similarity, (cheap score, f1), (big score, f1)); cheap
# costs 1 and big 10 per question. The fit half rewards a cheap threshold of 0.5; the test
# half is where the figures come from.
FIT = [
    ("f1", True, "squad", 0.7, (0.9, 1.0), (0.8, 1.0)),
    ("f2", True, "squad", 0.7, (0.3, 0.0), (0.9, 1.0)),
    ("f3", False, "squad", 0.6, (0.2, 0.0), (0.2, 0.0)),
    ("f4", False, "off_topic", 0.1, (0.9, 0.0), (0.9, 0.0)),
]
TEST = [
    ("t1", True, "squad", 0.7, (0.9, 1.0), (0.8, 1.0)),
    ("t2", True, "squad", 0.7, (0.6, 0.0), (0.9, 1.0)),
    ("t3", True, "squad", 0.7, (0.4, 0.0), (0.9, 0.5)),
    ("t4", False, "squad", 0.6, (0.2, 0.0), (0.2, 0.0)),
    ("t5", False, "off_topic", 0.1, (0.9, 0.0), (0.9, 0.0)),
]


def _rows(run: EvaluationRun, rows: list, split: str) -> None:
    for qid, answerable, source, top, cheap, big in rows:
        for tier, (score, f1), cost in (("cheap", cheap, 1), ("big", big, 10)):
            EvaluationResult.objects.create(
                run=run,
                question_id=qid,
                question=qid,
                source=source,
                split=split,
                answerable=answerable,
                tier=tier,
                score=score,
                f1=f1,
                grade=f1,
                top_similarity=top,
                cost=Decimal(cost),
                call_cost=Decimal(cost),
                latency_ms=100,
            )


@pytest.fixture
def run() -> EvaluationRun:
    for name, order in (("cheap", 10), ("big", 20)):
        ModelTier.objects.create(
            name=name, base_url="http://127.0.0.1:9/v1", model=name, order=order, threshold=0.0
        )
    run = EvaluationRun.objects.create(
        dataset="hand.jsonl",
        settings={"relevance_floor": 0.0},
        tiers=[{"name": "big", "order": 20}, {"name": "cheap", "order": 10}],
        thresholds={"cheap": 0.5, "big": 0.0},
        status=EvaluationRun.Status.COMPLETE,
    )
    _rows(run, FIT, "fit")
    _rows(run, TEST, "test")
    # The real cascade's own rows: stored, shown as they are, never replayed.
    for qid, answerable, source, *_ in TEST:
        EvaluationResult.objects.create(
            run=run,
            question_id=qid,
            question=qid,
            source=source,
            split="test",
            answerable=answerable,
            tier="cascade",
            f1=1.0 if answerable else 0.0,
            cost=Decimal(3),
            latency_ms=100,
        )
    return run


def _chart(page: str) -> dict:
    return json.loads(
        page.split('<script id="tuning-data" type="application/json">')[1].split("</script>")[0]
    )


def test_run_page_shows_tiers_alone_and_the_cascade_on_the_test_split(
    run: EvaluationRun, admin_client
) -> None:  # noqa: ANN001
    page = admin_client.get(f"/admin/evaluations/{run.id}/").content.decode()
    assert "cheap alone" in page and "big alone" in page and "cascade (as run)" in page
    summary = dashboard_data(period=period_parse(period="today"))["accuracy"]["evaluation"]
    by_label = {p["label"]: p for p in summary["policies"]}
    # Test split only: t1..t5. cheap alone answers t1 right, t2 and t3 wrong.
    assert by_label["cheap alone"]["questions"] == 5
    assert by_label["cheap alone"]["answerable_f1"] == pytest.approx(1 / 3)
    assert by_label["big alone"]["answerable_f1"] == pytest.approx(2.5 / 3)
    assert by_label["cascade (as run)"]["mean_cost"] == pytest.approx(3.0)
    assert by_label["cascade (as run)"]["cost_vs_reference"] == pytest.approx(0.3)
    assert admin_client.get("/admin/evaluations/999999/").status_code == 302


def test_tuning_page_chooses_on_fit_and_reports_on_test(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    page = admin_client.get("/admin/tuning/", {"run": run.id, "budget": "6"}).content.decode()
    assert 'id="splits"' in page and 'id="chosen"' in page
    assert (
        "fit</strong> split (4 questions)" in page and "test</strong> split (5 questions)" in page
    )
    chart = _chart(page)
    chosen = chart["chosen"]
    assert chosen["tiers"] == ["cheap", "big"]
    # Chosen on the fit split (where it is perfect), its figures from the test split.
    assert chosen["fit_split"]["questions"] == 4 and chosen["fit_split"]["answerable_f1"] == 1.0
    assert chosen["questions"] == 5 and chosen["answerable_f1"] < 1.0
    # Off-topic (declined by no floor here) and near misses are separate figures.
    assert {"near_miss_abstention", "off_topic_abstention"} <= set(chosen)
    page = admin_client.get("/admin/tuning/", {"run": run.id, "budget": "0.5"}).content.decode()
    assert 'id="not-found"' in page


def test_applying_writes_thresholds_and_the_floor(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    response = admin_client.post(
        f"/admin/tuning/?run={run.id}",
        {"run": run.id, "tiers": "cheap,big", "thresholds": "0.55,0.1", "floor": "0.35"},
    )
    assert response.status_code == 302
    tiers = {t.name: t for t in ModelTier.objects.all()}
    assert (tiers["cheap"].threshold, tiers["big"].threshold) == (0.55, 0.1)
    assert relevance_floor() == 0.35
    # A one-tier policy disables the other tier.
    admin_client.post("/admin/tuning/", {"run": run.id, "tiers": "big", "thresholds": "0.25"})
    tiers = {t.name: t for t in ModelTier.objects.all()}
    assert not tiers["cheap"].enabled and tiers["big"].enabled and tiers["big"].threshold == 0.25
    # Bad input changes nothing.
    admin_client.post("/admin/tuning/", {"run": run.id, "tiers": "nope", "thresholds": "0.5"})
    admin_client.post("/admin/tuning/", {"run": run.id, "tiers": "big", "thresholds": "7"})
    admin_client.post("/admin/tuning/", {"tiers": "big", "thresholds": "0.9"})
    assert ModelTier.objects.get(name="big").threshold == 0.25


def test_a_demo_run_cannot_be_applied(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    run.settings = {**run.settings, "demo": True}
    run.save()
    page = admin_client.get("/admin/tuning/", {"run": run.id, "budget": "6"}).content.decode()
    assert 'id="demo-run"' in page and 'id="apply-chosen"' not in page
    admin_client.post(
        "/admin/tuning/", {"run": run.id, "tiers": "cheap,big", "thresholds": "0.5,0.5"}
    )
    assert ModelTier.objects.get(name="cheap").threshold == 0.0
    with pytest.raises(CommandError, match="demo"):
        call_command(
            "tune_thresholds",
            "--run",
            str(run.id),
            "--budget",
            "6",
            "--apply",
            stdout=io.StringIO(),
        )
    assert ModelTier.objects.get(name="cheap").threshold == 0.0


def test_tune_thresholds_command(run: EvaluationRun) -> None:
    out = io.StringIO()
    call_command("tune_thresholds", "--run", str(run.id), "--budget", "6", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["chosen_on"] == "fit" and report["reported_on"] == "test"
    assert report["chosen"]["tiers"] == ["cheap", "big"]
    out = io.StringIO()
    call_command(
        "tune_thresholds", "--run", str(run.id), "--target-f1", "1.0", "--apply", stdout=out
    )
    assert "CHOSEN" in out.getvalue() and "applied:" in out.getvalue()
    # F1 1.0 on fit as cheaply as possible: cheap accepts f1 (0.9) only.
    assert 0.3 < ModelTier.objects.get(name="cheap").threshold <= 0.9
    assert not ScorerWeights.objects.exists()  # thresholds only: the weights stay as they are
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
    # A question line without the id and answerable fields the command reads is refused.
    admin_client.post(
        "/admin/evaluations/", {"questions": SimpleUploadedFile("q.jsonl", b'{"question": "?"}')}
    )
    assert DBTaskResult.objects.count() == 1


def test_demo_traffic_is_labelled_idempotent_and_off_budget() -> None:
    call_command(
        "setup_demo", "--no-admin", "--no-knowledge", "--no-demo-traffic", stdout=io.StringIO()
    )
    out = io.StringIO()
    call_command("load_demo_traffic", "--days", "5", "--per-day", "20", stdout=out)
    assert "DEMO answers" in out.getvalue()
    assert dashboard_data(period=period_parse(period="7d"))["questions"] == 0  # not customers'
    week = dashboard_data(period=period_parse(period="7d"), demo=True)
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
    from chatbot.evaluation.apply import policy_apply

    settings.CASCADE_START_TIER = "big"
    summary = policy_apply(run=run, tiers=["cheap", "big"], thresholds=[0.5, 0.0], floor=None)
    assert any("CASCADE_START_TIER=big skips cheap" in line for line in summary)
    settings.CASCADE_START_TIER = "cheap"
    summary = policy_apply(run=run, tiers=["cheap", "big"], thresholds=[0.5, 0.0], floor=None)
    assert not any("warning" in line for line in summary)


def test_run_page_refreshes_only_while_running(run: EvaluationRun, admin_client) -> None:  # noqa: ANN001
    assert (
        'http-equiv="refresh"'
        not in admin_client.get(f"/admin/evaluations/{run.id}/").content.decode()
    )
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.RUNNING)
    assert (
        'http-equiv="refresh"' in admin_client.get(f"/admin/evaluations/{run.id}/").content.decode()
    )
