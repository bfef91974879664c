"""`manage.py evaluate` through the real pipeline with the small model: stored rows, resume, figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from routing.models import EvaluationResult, EvaluationRun

pytestmark = [pytest.mark.django_db(transaction=True)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_evaluate_stores_rows_per_question_and_tier_and_resumes(small_tier, tmp_path) -> None:  # noqa: ANN001
    passages = write_jsonl(
        tmp_path / "passages.jsonl",
        [
            {
                "id": "Returns#0",
                "title": "Returns",
                "text": "You can return most items within 30 days of delivery.",
            }
        ],
    )
    questions = write_jsonl(
        tmp_path / "questions.jsonl",
        [
            {
                "id": "q-ans",
                "question": "Within how many days can I return an item?",
                "answers": ["30 days", "within 30 days"],
                "answerable": True,
                "passage_id": "Returns#0",
            },
            {
                "id": "q-unans",
                "question": "Within how many days can I return a gift card?",
                "answers": [],
                "answerable": False,
                "passage_id": "Returns#0",
            },
        ],
    )
    off_topic = write_jsonl(
        tmp_path / "off.jsonl", [{"q1": "Who was the first emperor of Rome?", "q2": "x"}]
    )
    out = io.StringIO()
    call_command(
        "evaluate",
        questions,
        passages=passages,
        off_topic=off_topic,
        tiers="small",
        stdout=out,
    )
    run = EvaluationRun.objects.get()
    assert run.status == EvaluationRun.Status.COMPLETE
    rows = {r.question_id: r for r in EvaluationResult.objects.filter(run=run, tier="small")}
    assert set(rows) == {"q-ans", "q-unans", next(k for k in rows if k.startswith("off-"))}
    off = next(r for k, r in rows.items() if k.startswith("off-"))
    assert off.source == "off_topic" and off.abstained and off.correct_abstention
    assert off.abstain_reason == "no_passages" and off.cost == 0
    answered = rows["q-ans"]
    assert answered.tokens_in > 0 and answered.cost > 0 and answered.signals
    assert 0.0 <= answered.score <= 1.0
    report = json.loads(out.getvalue().split("\n[all questions]")[0])
    assert report["splits"]["all"]["small alone"]["questions"] == 3
    assert run.summary["run"] == run.pk

    # Resuming a finished run calls no model and adds no row.
    before = EvaluationResult.objects.count()
    call_command("evaluate", resume=run.pk, stdout=io.StringIO())
    assert EvaluationResult.objects.count() == before
