"""The gap inbox: which answers are gaps, grouping by meaning, dismissing, curated answers, access."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from chatbot.gaps import gap_curate, gap_dismiss, gap_groups
from chatbot.models import Conversation, Message
from retrieval.cache import cache_false_hit, cache_lookup
from retrieval.curated import curated_history
from retrieval.models import CacheEntry, CacheHit
from routing.models import ModelTier

pytestmark = pytest.mark.django_db

GIFT = [
    "Do you offer gift wrapping?",
    "Can you gift wrap a present?",
    "Is gift wrapping available?",
]
CRYPTO = [
    "Can I pay with bitcoin?",
    "Do you accept cryptocurrency payments?",
    "Is paying in Ethereum possible?",
]
DOGS = ["Are dogs allowed in your stores?", "Can I bring my dog into the shop?"]


def ask(
    question: str, *, days_ago: int = 0, origin: str = Message.Origin.CUSTOMER, **answer: object
) -> Message:
    """A customer's question and the bot's stored answer to it (declined unless told otherwise)."""
    conversation = Conversation.objects.create(session_key="s")
    Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=question, origin=origin
    )
    answer.setdefault("abstained", True)
    answer.setdefault("abstain_reason", "no_passages" if answer["abstained"] else "")
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="I don't know." if answer["abstained"] else "An answer.",
        standalone_question=question,
        origin=origin,
        **answer,
    )
    if days_ago:
        Message.objects.filter(id=message.id).update(
            created_at=timezone.now() - dt.timedelta(days=days_ago)
        )
    return message


def accepted(score: float) -> dict:
    return {
        "abstained": False,
        "tier": "small",
        "attempts": [{"tier": "small", "outcome": "accepted", "score": score}],
    }


@pytest.fixture
def declined() -> None:
    for days_ago, question in enumerate(GIFT + CRYPTO + DOGS):
        ask(question, days_ago=days_ago % 10)


def grouped(groups) -> list[set[str]]:  # noqa: ANN001
    return [{text for text, _ in g.examples} for g in groups]


def test_declined_questions_are_grouped_by_meaning(declined: None) -> None:
    groups = gap_groups()
    assert sorted(map(sorted, grouped(groups))) == sorted(map(sorted, [GIFT, CRYPTO, DOGS]))
    gift = next(g for g in groups if set(GIFT) == {t for t, _ in g.examples})
    assert gift.count == gift.open == 3
    assert gift.reasons == {"declined": 3}
    assert gift.question in GIFT
    assert sum(gift.per_day) == 3 and len(gift.per_day) == 14
    assert gift.this_week + gift.last_week == 3
    # A few new questions join the grouping without reclustering: one of a known meaning joins
    # its group, one of a new meaning makes a group of its own.
    ask("Could you gift wrap it for me?")
    ask("Can I hire a van?")
    groups = gap_groups()
    assert sorted(map(sorted, grouped(groups))) == sorted(
        map(
            sorted,
            [
                [*GIFT, "Could you gift wrap it for me?"],
                CRYPTO,
                DOGS,
                ["Can I hire a van?"],
            ],
        )
    )
    # Every question's vector is kept: the next grouping embeds nothing again.
    assert not Message.objects.filter(
        role=Message.Role.ASSISTANT, question_embedding__isnull=True
    ).exists()


def test_only_customers_low_scores_thumbs_down_and_declines_count(declined: None) -> None:
    ModelTier.objects.update_or_create(
        name="small", defaults={"base_url": "http://127.0.0.1:1/v1", "model": "m", "threshold": 0.5}
    )
    ask("Can I pay with Dogecoin?", origin=Message.Origin.EVALUATION)
    ask("How long does standard delivery take?", **accepted(0.93))
    barely = ask("Can I pay with Litecoin?", **accepted(0.52))
    thumbs = ask("Can I pay using bitcoin?", **accepted(0.9), feedback=-1)
    Message.objects.filter(id=thumbs.id).update(feedback_reason="outdated")
    groups = gap_groups()
    questions = {t for g in groups for t, _ in g.examples}
    assert "Can I pay with Dogecoin?" not in questions  # an evaluation run's
    assert "How long does standard delivery take?" not in questions  # confident
    crypto = next(g for g in groups if "Can I pay with bitcoin?" in {t for t, _ in g.examples})
    assert {barely.id, thumbs.id} <= set(crypto.open_ids)
    assert crypto.reasons == {"declined": 3, "low score": 1, "thumbs-down": 1}
    assert crypto.feedback_reasons == {"outdated": 1}


def test_old_questions_fall_out_of_the_window(declined: None, settings) -> None:  # noqa: ANN001
    settings.GAP_WINDOW_DAYS = 3
    questions = {t for g in gap_groups() for t, _ in g.examples}
    assert questions == {q for i, q in enumerate(GIFT + CRYPTO + DOGS) if i % 10 < 3}


def test_a_dismissed_group_returns_with_a_new_question(declined: None) -> None:
    crypto = next(g for g in gap_groups() if "Can I pay with bitcoin?" in dict(g.examples))
    assert gap_dismiss(ids=crypto.open_ids) == 3
    assert not any("Can I pay with bitcoin?" in dict(g.examples) for g in gap_groups())
    assert len(gap_groups()) == 2
    ask("Do you take payment in crypto?")
    back = next(g for g in gap_groups() if "Can I pay with bitcoin?" in dict(g.examples))
    assert (back.count, back.open, back.closed) == (4, 1, 3)


def test_a_curated_answer_is_served_through_the_guarded_cache(declined: None, settings) -> None:  # noqa: ANN001
    gift = next(g for g in gap_groups() if set(GIFT) == set(dict(g.examples)))
    curated = gap_curate(
        ids=gift.open_ids,
        question="Do you offer gift wrapping?",
        phrasings="Can you gift wrap a present?",
        answer="Yes: gift wrapping costs 3 euros; choose it at checkout.",
    )
    assert not any(set(GIFT) & set(dict(g.examples)) for g in gap_groups())

    hit = async_to_sync(cache_lookup)(question="Can you gift wrap a present?", message_id=999).hit
    assert hit is not None and hit.answer.startswith("Yes: gift wrapping")
    # The guard still vetoes a look-alike of the opposite meaning.
    assert async_to_sync(cache_lookup)(question="Don't you offer gift wrapping?").hit is None

    # Never expires with the cache's TTL, and a thumbs-down alone does not retire it.
    settings.CACHE_TTL_SECONDS = 60
    CacheEntry.objects.filter(curated=curated).update(
        created_at=timezone.now() - dt.timedelta(days=30)
    )
    assert async_to_sync(cache_false_hit)(message_id=999)
    assert CacheHit.objects.get(message_id=999).false_hit
    assert async_to_sync(cache_lookup)(question="Do you offer gift wrapping?").hit is not None

    # Editing keeps the old version.
    gap_curate(
        ids=[],
        question="Do you offer gift wrapping?",
        answer="Yes, for 4 euros since March.",
        curated=curated,
    )
    hit = async_to_sync(cache_lookup)(question="Do you offer gift wrapping?").hit
    assert hit is not None and hit.answer == "Yes, for 4 euros since March."
    history = curated_history(curated=curated)
    assert [(v.version, v.active) for v in history] == [(2, True), (1, False)]
    assert history[1].phrasings == ["Do you offer gift wrapping?", "Can you gift wrap a present?"]


@pytest.fixture
def staff(client):  # noqa: ANN001, ANN201
    user = User.objects.create_user("reviewer", password="pw", is_staff=True)
    client.force_login(user)
    return user


def test_the_inbox_needs_staff_with_the_permission(client, declined: None) -> None:  # noqa: ANN001
    url = reverse("gaps")
    assert client.get(url).status_code == 302  # to the admin login
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403
    assert client.post(url, {"ids": "1"}).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="review_gaps"))
    response = client.get(url)
    assert response.status_code == 200
    assert response.content.count(b'class="gap-group"') == 3
    assert "Do you accept cryptocurrency payments?" in response.content.decode()


def test_dismiss_and_curate_from_the_page(client, staff, declined: None) -> None:  # noqa: ANN001
    staff.user_permissions.add(Permission.objects.get(codename="review_gaps"))
    dogs = next(g for g in gap_groups() if set(DOGS) == set(dict(g.examples)))
    response = client.post(reverse("gaps"), {"ids": ",".join(map(str, dogs.open_ids))})
    assert response.status_code == 302
    assert "dog" not in client.get(reverse("gaps")).content.decode()

    gift = next(g for g in gap_groups() if set(GIFT) == set(dict(g.examples)))
    ids = ",".join(map(str, gift.open_ids))
    form = client.get(reverse("gap-curate"), {"ids": ids}).content.decode()
    assert all(q in form for q in GIFT)  # prefilled with the group's questions
    # Bad input comes back with what was typed and stores nothing.
    response = client.post(reverse("gap-curate"), {"ids": ids, "question": "Gift wrap?"})
    assert response.status_code == 200 and "Write the answer." in response.content.decode()
    assert not CacheEntry.objects.exists()
    response = client.post(
        reverse("gap-curate"),
        {"ids": ids, "question": GIFT[0], "phrasings": "\n".join(GIFT[1:]), "answer": "Yes."},
    )
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "In service" in page and 'class="version"' in page
    assert CacheEntry.objects.filter(active=True, tier="curated").count() == 3
    assert "gift" not in client.get(reverse("gaps")).content.decode().lower()
    # Editing makes a new version and keeps the old one; withdrawing stops serving it.
    url = response["Location"]
    client.post(url, {"question": GIFT[0], "answer": "Yes, for 4 euros."})
    page = client.get(url).content.decode()
    assert page.count('class="version"') == 2 and "Yes, for 4 euros." in page
    assert set(CacheEntry.objects.filter(active=True).values_list("answer", flat=True)) == {
        "Yes, for 4 euros."
    }
    client.post(url, {"action": "withdraw"})
    assert not CacheEntry.objects.filter(active=True).exists()
    assert "Withdrawn" in client.get(url).content.decode()


def test_a_backlog_is_embedded_in_the_background(
    client, staff, declined: None, monkeypatch
) -> None:  # noqa: ANN001
    from django_tasks_db.models import DBTaskResult

    from chatbot import gaps

    staff.user_permissions.add(Permission.objects.get(codename="review_gaps"))
    monkeypatch.setattr(gaps, "EMBED_INLINE_MAX", 2)
    cache.delete(gaps.FILL_QUEUED_KEY)
    page = client.get(reverse("gaps")).content.decode()
    assert "8 questions are being read in the background" in page
    assert 'class="gap-group"' not in page  # the page did not embed them itself
    assert DBTaskResult.objects.filter(task_path__endswith="gap_vectors_task").count() == 1
    client.get(reverse("gaps"))
    assert DBTaskResult.objects.count() == 1  # queued once
    assert gaps.gap_vectors_fill() == 8  # what the task does
    page = client.get(reverse("gaps")).content.decode()
    assert "background" not in page and page.count('class="gap-group"') == 3


def test_a_curated_answer_without_a_group(client, staff, declined: None) -> None:  # noqa: ANN001
    staff.user_permissions.add(Permission.objects.get(codename="review_gaps"))
    form = {"ids": "", "question": "Do you sell kites?", "answer": ""}
    response = client.post(reverse("gap-curate"), form)
    # Nothing lost: the question typed comes back with the error.
    assert response.status_code == 200 and 'value="Do you sell kites?"' in response.content.decode()
    response = client.post(reverse("gap-curate"), {**form, "answer": "Yes, in spring."})
    assert response.status_code == 302
    assert CacheEntry.objects.get(active=True).answer == "Yes, in spring."
    assert client.get(reverse("gaps")).content.decode().count('class="gap-group"') == 3
