"""Answers admins labelled in the message explorer, as an evaluation set of the shop's own questions.

A label says whether an answer was right; a wrong one may carry the right answer. The labelled
answers are written as a questions file in the SQuAD format `manage.py evaluate` reads (the one
loader, `runner.questions_select`), so an evaluation run and the tuning page work on them as on
any dataset:

- right: the gold answer is the admin's right answer if given, else the bot's own answer; a
  right "I don't know" makes the question unanswerable (declining is what is wanted);
- wrong with a right answer: that answer is the gold;
- wrong without one: the bot should have declined, so the question counts as unanswerable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from chatbot.gaps import asked_question
from chatbot.models import Message
from routing.router import decision_accuracy_set

LABEL_FIELDS = ("label", "label_answer")
SOURCE = "labelled"


def message_label(*, message: Message, label: str, right_answer: str = "") -> Message:
    """Store an admin's label on an answer ('' clears it); ValueError for a user turn or bad label."""
    if message.role != Message.Role.ASSISTANT:
        raise ValueError("Only the bot's answers are labelled.")
    if label not in ("", *Message.Label.values):
        raise ValueError(f"A label is one of: {', '.join(Message.Label.values)}.")
    message.label = label
    message.label_answer = right_answer.strip() if label else ""
    message.labelled_at = timezone.now() if label else None
    message.save(update_fields=["label", "label_answer", "labelled_at"])
    _router_label(message_ids=[message.id], label=label)
    return message


def messages_label(*, queryset: QuerySet[Message], label: str) -> int:
    """Label many answers at once (their right answers stay as they were); how many."""
    if label not in Message.Label.values:
        raise ValueError(f"A label is one of: {', '.join(Message.Label.values)}.")
    ids = list(queryset.filter(role=Message.Role.ASSISTANT).values_list("id", flat=True))
    count = Message.objects.filter(id__in=ids).update(label=label, labelled_at=timezone.now())
    _router_label(message_ids=ids, label=label)
    return count


def _router_label(*, message_ids: list[int], label: str) -> None:
    # The router's reward for these answers takes the label as their accuracy (right 1,
    # wrong 0; cleared: back to the thumbs or the scorer's), above the customer's thumbs.
    accuracy = {Message.Label.RIGHT: 1.0, Message.Label.WRONG: 0.0}.get(label)
    for message_id in message_ids:
        decision_accuracy_set(message_id=message_id, label=accuracy)


def labelled_messages() -> QuerySet[Message]:
    """Labelled answers (never an evaluation run's own), with the question they answered."""
    return (
        Message.objects.filter(role=Message.Role.ASSISTANT, label__in=Message.Label.values)
        .exclude(origin=Message.Origin.EVALUATION)
        .annotate(question=asked_question())
        .order_by("labelled_at", "id")
    )


def labelled_questions() -> list[dict[str, Any]]:
    """The labelled answers as questions.jsonl rows: id, question, answers, answerable, passage_id.

    One row per distinct question (the latest label wins), and `passage_id` is the question's own
    key, so the fit/test split never puts the same question on both sides.
    """
    rows: dict[str, dict[str, Any]] = {}
    for m in labelled_messages():
        question = " ".join(m.question.split())
        if not question:
            continue
        if m.label == Message.Label.RIGHT:
            gold = m.label_answer or ("" if m.abstained else m.content)
        else:
            gold = m.label_answer
        key = hashlib.sha1(question.lower().encode()).hexdigest()[:16]
        rows[key] = {
            "id": f"msg-{m.id}",
            "question": question,
            "answers": [gold] if gold else [],
            "answerable": bool(gold),
            "passage_id": f"q-{key}",
            "source": SOURCE,
        }
    return list(rows.values())


def labelled_dataset_write(*, folder: Path | None = None) -> tuple[str, int]:
    """Write the labelled questions to a new JSONL file; (path, rows). ValueError when none."""
    questions = labelled_questions()
    if not questions:
        raise ValueError(
            "No labelled answers yet: label answers right or wrong in the message explorer."
        )
    folder = folder or Path(settings.MEDIA_ROOT) / "evaluations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"labelled-{timezone.now():%Y%m%d-%H%M%S-%f}.jsonl"
    path.write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8"
    )
    return str(path), len(questions)
