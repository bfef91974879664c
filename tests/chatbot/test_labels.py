"""Admins label answers in the message explorer; the labelled answers are an evaluation set."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse

from chatbot.evaluation.labelled import labelled_dataset_write, labelled_questions
from chatbot.evaluation.runner import questions_select
from chatbot.models import Conversation, Message
from routing.models import EvaluationResult, EvaluationRun, ModelTier


def answer(question: str, content: str = "An answer.", **fields: object) -> Message:
    conversation = Conversation.objects.create(session_key="s")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content=content, **fields
    )


@pytest.mark.django_db
def test_an_admin_labels_an_answer_in_the_message_explorer(client) -> None:  # noqa: ANN001
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    message = answer("How long is the return window?", "14 days [1].", tier="small")
    url = reverse("admin:chatbot_message_change", args=[message.id])
    page = client.get(url).content.decode()
    assert 'name="label"' in page and 'name="label_answer"' in page
    response = client.post(
        url, {"label": "wrong", "label_answer": "30 days from delivery.", "content": "hacked"}
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    message.refresh_from_db()
    assert (message.label, message.label_answer) == ("wrong", "30 days from delivery.")
    assert message.labelled_at is not None
    assert message.content == "14 days [1]."  # the stored answer is never edited here
    # A customer's own turn has nothing to label.
    question = Message.objects.get(role=Message.Role.USER)
    page = client.get(reverse("admin:chatbot_message_change", args=[question.id])).content
    assert b'name="label"' not in page


@pytest.mark.django_db
def test_labelled_answers_become_gold_questions_in_the_evaluate_format() -> None:
    answer("How long is the return window?", "30 days [1].", label="right")
    answer("Do you ship to Norway?", "Yes.", label="right", label_answer="Yes, in 4 days.")
    answer("Can I pay in yen?", "I don't know.", abstained=True, label="right")
    answer("What does express cost?", "3 euros.", label="wrong", label_answer="6 euros.")
    answer("Who is the CEO?", "Ada Lovelace.", label="wrong")
    answer("Do you sell kites?", "Yes.")  # not labelled
    answer("Is there a sale?", "Yes.", label="right", origin=Message.Origin.EVALUATION)
    # The same question labelled twice: one row, the latest label.
    answer("How long is the return window?", "30 days from delivery [1].", label="right")

    rows = {q["question"]: q for q in labelled_questions()}
    assert {q: (r["answers"], r["answerable"]) for q, r in rows.items()} == {
        "How long is the return window?": (["30 days from delivery [1]."], True),
        "Do you ship to Norway?": (["Yes, in 4 days."], True),
        "Can I pay in yen?": ([], False),
        "What does express cost?": (["6 euros."], True),
        "Who is the CEO?": ([], False),
    }


@pytest.mark.django_db
def test_the_labelled_file_goes_through_the_one_dataset_loader(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No labelled answers"):
        labelled_dataset_write(folder=tmp_path)
    answer("What does express cost?", "3 euros.", label="wrong", label_answer="6 euros.")
    answer("Who is the CEO?", "Ada.", label="wrong")
    path, count = labelled_dataset_write(folder=tmp_path)
    assert count == 2 and json.loads(Path(path).read_text().splitlines()[0])["question"]
    selected = {q["question"]: q for q in questions_select(questions_path=path)}
    assert selected["What does express cost?"]["answers"] == ["6 euros."]
    assert selected["Who is the CEO?"]["answerable"] is False
    assert {q["split"] for q in selected.values()} <= {"fit", "test"}


@pytest.mark.django_db
def test_the_evaluation_page_starts_a_run_on_the_labelled_answers(
    client, settings, tmp_path
) -> None:  # noqa: ANN001
    from django_tasks_db.models import DBTaskResult

    settings.MEDIA_ROOT = tmp_path
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    url = reverse("evaluation-runs")
    assert "the 0 answers labelled" in client.get(url).content.decode()
    client.post(url, {"dataset": "labelled"})
    assert not DBTaskResult.objects.exists()  # nothing labelled: nothing queued
    answer("What does express cost?", "3 euros.", label="wrong", label_answer="6 euros.")
    assert "the 1 answers labelled" in client.get(url).content.decode()
    client.post(url, {"dataset": "labelled"})
    task = DBTaskResult.objects.get()
    assert task.task_path.endswith("evaluation_run_task")
    path = Path(task.args_kwargs["kwargs"]["questions_path"])
    assert json.loads(path.read_text())["answers"] == ["6 euros."]


@pytest.mark.django_db(transaction=True)
def test_evaluate_labelled_runs_the_shops_own_questions(
    help_centre,  # noqa: ANN001
    fault_server,  # noqa: ANN001
    settings,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    settings.MEDIA_ROOT = tmp_path
    settings.CASCADE_START_TIER = "scripted"
    ModelTier.objects.update(enabled=False)
    ModelTier.objects.create(
        name="scripted",
        base_url=fault_server.base_url,
        model="ok:Express delivery costs 6 euros [1].",
        order=10,
        enabled=True,
        threshold=0.0,
        max_answer_tokens=32,
        timeout_seconds=5,
    )
    with pytest.raises(CommandError, match="No labelled answers"):
        call_command("evaluate", labelled=True, stdout=io.StringIO())
    answer(
        "How much does express delivery cost?", "3 euros.", label="wrong", label_answer="6 euros"
    )
    answer("How long does standard delivery take?", "3 to 5 working days [1].", label="right")

    call_command("evaluate", labelled=True, stdout=io.StringIO())
    run = EvaluationRun.objects.get()
    assert run.status == EvaluationRun.Status.COMPLETE and run.name == "labelled answers (2)"
    rows = {r.question: r for r in EvaluationResult.objects.filter(run=run, tier="scripted")}
    assert rows["How much does express delivery cost?"].gold_answers == ["6 euros"]
    assert rows["How much does express delivery cost?"].f1 > 0.5  # graded against the label
    assert rows["How long does standard delivery take?"].gold_answers == [
        "3 to 5 working days [1]."
    ]
