"""`manage.py evaluate` through the real pipeline: rows from the pipeline's own result, fitting
that changes nothing live, and a real cascade pass the replay predicts question by question."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from routing.models import EvaluationResult, EvaluationRun, ModelTier, ScorerWeights

pytestmark = [pytest.mark.django_db(transaction=True)]

# Passage ids whose sha1 puts them on the test split (the real cascade runs there).
PASSAGES = {
    "P0": ("Returns", "You can return most items within 30 days of delivery for a full refund."),
    "P1": ("Shipping", "Standard delivery takes 3 to 5 working days. Express costs 6 euros."),
    "P5": ("Gift cards", "Gift cards are valid for two years and cannot be exchanged for cash."),
}
QUESTIONS = [
    ("q-ret", "P0", "Within how many days can I return an item?", ["30 days"], True),
    ("q-ret-x", "P0", "Within how many days can I return a sofa bed?", [], False),
    ("q-ship", "P1", "How long does standard delivery take?", ["3 to 5 working days"], True),
    ("q-ship-x", "P1", "How much does delivery to Mars cost?", [], False),
    ("q-gift", "P5", "How long are gift cards valid?", ["two years"], True),
    ("q-gift-x", "P5", "Can gift cards be used in the restaurant?", [], False),
]
OFF_TOPIC = ["Who was the first emperor of Rome?", "What is the boiling point of mercury?"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    passages = write_jsonl(
        tmp_path / "passages.jsonl",
        [{"id": k, "title": t, "text": x} for k, (t, x) in PASSAGES.items()],
    )
    questions = write_jsonl(
        tmp_path / "questions.jsonl",
        [
            {"id": q, "passage_id": p, "question": text, "answers": a, "answerable": ok}
            for q, p, text, a, ok in QUESTIONS
        ],
    )
    off = write_jsonl(tmp_path / "off.jsonl", [{"q1": q, "q2": "x"} for q in OFF_TOPIC])
    return {"passages": passages, "questions": questions, "off_topic": off}


@pytest.fixture
def two_tiers(small_tier, fault_server, settings, django_db_blocker):  # noqa: ANN001, ANN201
    """small (real SmolLM2) first, then 'big' on the fault server (pricier, scripted answer)."""
    settings.CASCADE_START_TIER = "small"
    with django_db_blocker.unblock():
        ModelTier.objects.update_or_create(
            name="big",
            defaults=dict(
                base_url=fault_server.base_url,
                model="ok:You have 30 days to return an item [1]",
                order=50,
                enabled=True,
                threshold=0.0,
                max_answer_tokens=32,
                timeout_seconds=5,
                price_input_per_mtok="10",
                price_output_per_mtok="40",
            ),
        )
    return small_tier


def _gap_threshold(scores: list[float]) -> float:
    """The middle of the widest gap between distinct scores: some answers pass, some escalate,
    and none sits close to the threshold."""
    values = sorted(set(scores))
    assert len(values) >= 2, f"need two distinct scores, got {values}"
    low, high = max(zip(values, values[1:], strict=False), key=lambda pair: pair[1] - pair[0])
    return (low + high) / 2


def test_evaluate_fit_without_apply_changes_nothing_and_replay_predicts_the_cascade(
    two_tiers,  # noqa: ANN001
    files: dict[str, str],
) -> None:
    out = io.StringIO()
    call_command(
        "evaluate",
        files["questions"],
        passages=files["passages"],
        off_topic=files["off_topic"],
        tiers="small,big",
        fit=True,
        stdout=out,
    )
    run = EvaluationRun.objects.get()
    assert run.status == EvaluationRun.Status.COMPLETE
    rows = list(EvaluationResult.objects.filter(run=run))
    assert len(rows) == 2 * (len(QUESTIONS) + len(OFF_TOPIC))
    # --fit without --apply: the live weights and thresholds are what they were.
    assert not ScorerWeights.objects.exists()
    assert {t.name: t.threshold for t in ModelTier.objects.all()} == {"small": 0.0, "big": 0.0}
    assert "fit" in run.settings and "choice" in run.settings
    # Rows come from the pipeline's result: the tier's own attempt, costs kept apart.
    big = next(r for r in rows if r.tier == "big" and r.question_id == "q-ret")
    assert big.call_cost > 0 and big.error_code == "" and big.signals and big.top_similarity > 0
    # "30 days" among "you have 30 days to return item" (article dropped): P 2/7, R 1.
    assert big.f1 == pytest.approx(4 / 9)
    off = next(r for r in rows if r.source == "off_topic" and r.abstain_reason == "no_passages")
    assert off.cost == 0 and off.abstained and off.correct_abstention

    # Thresholds that make some of small's answers escalate to big.
    small_scores = [
        r.score
        for r in rows
        if r.tier == "small" and r.signals and not r.said_dont_know and r.split == "test"
    ]
    threshold = _gap_threshold(small_scores)
    ModelTier.objects.filter(name="small").update(threshold=threshold)
    report_path = Path(files["questions"]).with_name("report.json")
    call_command(
        "evaluate", resume=run.pk, cascade_limit=8, json=str(report_path), stdout=io.StringIO()
    )
    report = json.loads(report_path.read_text())
    agreement = report["agreement"]
    cascade = list(EvaluationResult.objects.filter(run=run, tier="cascade"))
    assert cascade and agreement["compared"] == len(cascade)
    assert agreement["policy"]["thresholds"] == [round(threshold, 4), 0.0]
    # The replay, with the pass's own thresholds, floor and weights, predicts every question.
    assert agreement["disagreements"] == []
    assert agreement["tier_agreement"] == 1.0 and agreement["abstention_agreement"] == 1.0
    # Near misses and off-topic questions are reported apart.
    assert "answerable" in agreement["abstention_by_kind"]
    assert set(agreement["abstention_by_kind"]) <= {"answerable", "near_miss", "off_topic"}
    # Some answers escalated from small to big, and some stayed with small.
    escalated = [r for r in cascade if len(r.attempts) > 1]
    stayed = [r for r in cascade if [a["outcome"] for a in r.attempts] == ["accepted"]]
    assert escalated and stayed

    # Resuming a finished run calls no model and adds no row.
    before = EvaluationResult.objects.count()
    call_command("evaluate", resume=run.pk, stdout=io.StringIO())
    assert EvaluationResult.objects.count() == before


def test_a_demo_run_cannot_be_fitted_and_applied(two_tiers) -> None:  # noqa: ANN001
    from django.core.management.base import CommandError

    run = EvaluationRun.objects.create(
        dataset="demo", settings={"demo": True, "questions": [], "run_tiers": []}
    )
    with pytest.raises(CommandError, match="demo"):
        call_command("evaluate", resume=run.pk, fit=True, apply=True, stdout=io.StringIO())
