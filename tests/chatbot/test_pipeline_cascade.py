"""The pipeline's cascade with the real small model plus a fault-injecting tier: what customers see and what is stored."""

from __future__ import annotations

import os
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chatbot.models import Conversation, Message
from chatbot.pipeline import AnswerOptions, answer_question, retrieve, tier_prompt
from chatbot.prompts import ABSTAIN_TEXT, passages_ordered
from routing.models import ModelTier

pytestmark = [pytest.mark.django_db(transaction=True)]

DOCS = {
    "returns.md": (
        "# Returns policy\n\n## Return window\nYou can return most items within 30 days of "
        "delivery. Items must be unused and in their original packaging.\n"
    ),
    "shipping.md": (
        "# Shipping\n\n## Delivery times\nStandard delivery takes 3 to 5 working days. Express "
        "delivery takes 1 working day and costs 6 euros.\n"
    ),
}
QUESTION = "How many days do I have to return an item?"


@pytest.fixture
def knowledge(tmp_path: Path, django_db_blocker) -> None:  # noqa: ANN001
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with django_db_blocker.unblock():
        call_command(
            "load_demo_knowledge", folder=str(tmp_path), verbosity=0, stdout=open(os.devnull, "w")
        )


@pytest.fixture
def cascade(small_tier, fault_server, settings, django_db_blocker):  # noqa: ANN001, ANN201
    """small (real SmolLM2) first, then 'big' on the fault server (pricier, scripted answer)."""
    settings.CASCADE_START_TIER = "small"
    with django_db_blocker.unblock():
        ModelTier.objects.filter(name="small").update(threshold=0.0)
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


async def ask(text: str, options: AnswerOptions | None = None) -> list[dict]:
    conversation = await Conversation.objects.acreate(session_key="test")
    user = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content=text
    )
    return [
        e
        async for e in answer_question(
            conversation=conversation, user_message=user, options=options
        )
    ]


async def test_confident_cheap_answer_stays_and_costs_are_stored(cascade, knowledge) -> None:  # noqa: ANN001
    events = await ask(QUESTION)
    end = events[-1]
    assert end["type"] == "answer.end", events
    assert end["tier"] == "small" and not end["abstained"]
    assert "answer.escalate" not in [e["type"] for e in events]
    [attempt] = end["attempts"]
    assert attempt["tier"] == "small" and attempt["outcome"] == "accepted"
    small = await ModelTier.objects.aget(name="small")
    expected = small.cost(attempt["tokens_in"], attempt["tokens_out"])
    assert end["cost"] == pytest.approx(float(expected))
    # The largest enabled tier ('big', 10/40 per Mtok) for the same prompt and answer length.
    assert end["cost_if_largest"] == pytest.approx(
        float((Decimal(10) * attempt["tokens_in"] + Decimal(40) * attempt["tokens_out"]) / 10**6)
    )
    message = await Message.objects.aget(id=end["message_id"])
    assert message.tier == "small" and message.attempts == end["attempts"]
    assert message.cost == expected and message.cost_if_largest > message.cost
    assert (message.baseline_tier, message.baseline_measured) == ("big", False)
    assert end["baseline"] == {"tier": "big", "measured": False}
    assert message.origin == Message.Origin.CUSTOMER
    totals = end["conversation_totals"]
    assert totals["answers"] == 1 and totals["cost"] == pytest.approx(float(expected))


async def test_a_new_conversations_totals_are_its_answers_as_stored(cascade, knowledge) -> None:  # noqa: ANN001
    """The first answer of a conversation totals itself without reading the conversation back:
    the same figures the stored rows give, to the column's last decimal."""
    from chatbot.pipeline import _conversation_totals_sync

    end = (await ask(QUESTION, AnswerOptions(new_conversation=True)))[-1]
    assert end["type"] == "answer.end" and end["cost"] > 0
    message = await Message.objects.aget(id=end["message_id"])
    stored = await sync_to_async(_conversation_totals_sync)(message.conversation_id)
    assert end["conversation_totals"] == stored and stored["answers"] == 1


async def test_the_tier_that_read_the_prompt_has_its_passages_quoted_first_next_time(
    cascade,  # noqa: ANN001
    knowledge,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    """After an answer, the next prompt to the tier that read it starts with the passages it
    started with (the server's prompt cache holds them); a tier that was never called keeps
    the document order."""
    settings.PROMPT_PASSAGE_ORDER = "reuse"
    end = (await ask(QUESTION))[-1]
    assert end["tier"] == "small" and [a["tier"] for a in end["attempts"]] == ["small"]
    first = next(
        p for p in await retrieve(question=QUESTION) if p.chunk_id == end["sources"][0]["chunk_id"]
    )
    earlier = replace(first, chunk_id=0, document_id=0, text="Another document's passage.")
    assert passages_ordered([earlier, first], tier="small") == [first, earlier]
    assert passages_ordered([earlier, first], tier="big") == [earlier, first]


async def test_admin_threshold_edit_makes_the_next_question_escalate(cascade, knowledge) -> None:  # noqa: ANN001
    await ModelTier.objects.filter(name="small").aupdate(threshold=1.0)
    events = await ask(QUESTION)
    types = [e["type"] for e in events]
    assert "answer.escalate" in types
    escalate = events[types.index("answer.escalate")]
    assert (escalate["from_tier"], escalate["to_tier"]) == ("small", "big")
    end = events[-1]
    assert end["tier"] == "big"
    assert [a["outcome"] for a in end["attempts"]] == ["low_score", "accepted"]
    assert end["cost"] == pytest.approx(sum(a["cost"] for a in end["attempts"]))
    after = "".join(e["text"] for e in events[types.index("answer.escalate") :] if "text" in e)
    assert after.strip() == "You have 30 days to return an item [1]"
    message = await Message.objects.aget(id=end["message_id"])
    assert message.content.strip() == after.strip()
    assert message.cost_if_largest == Decimal(str(end["attempts"][1]["cost"]))
    assert message.baseline_measured, "the baseline tier ran: its own cost, measured"


async def test_failing_tier_falls_through_and_the_reason_is_recorded(
    cascade, knowledge, fault_server
) -> None:  # noqa: ANN001
    await ModelTier.objects.acreate(
        name="flaky",
        base_url=fault_server.base_url,
        model="http500",
        order=1,
        enabled=True,
        timeout_seconds=5,
    )
    end = (await ask(QUESTION, AnswerOptions(tiers=["flaky", "small"])))[-1]
    assert end["type"] == "answer.end"
    assert [a["outcome"] for a in end["attempts"]] == ["error:http", "accepted"]
    assert end["tier"] == "small" and end["status"] == Message.Status.COMPLETE


async def test_low_score_on_the_last_tier_says_i_dont_know(cascade, knowledge) -> None:  # noqa: ANN001
    await ModelTier.objects.filter(name="small").aupdate(threshold=1.0)
    events = await ask(QUESTION, AnswerOptions(tiers=["small"]))
    end = events[-1]
    assert end["abstained"] and end["abstain_reason"] == "low_score"
    message = await Message.objects.aget(id=end["message_id"])
    assert message.content == ABSTAIN_TEXT and message.abstained
    assert message.cost > 0, "the attempt that was declined is still paid for"


async def test_question_the_documents_do_not_cover_is_declined_before_any_model(
    cascade, knowledge, fault_server
) -> None:  # noqa: ANN001
    events = await ask("Who painted the ceiling of the Sistine Chapel?")
    end = events[-1]
    assert end["abstained"] and end["abstain_reason"] == "no_passages"
    assert end["attempts"] == [] and end["cost"] == 0
    message = await Message.objects.aget(id=end["message_id"])
    assert message.tier == "", "no model answered it"
    # What the decline avoided: the baseline's typical answer call, an estimate.
    assert message.cost_if_largest > 0 and not message.baseline_measured
    assert "".join(e.get("text", "") for e in events if e["type"] == "answer.delta") == ABSTAIN_TEXT
    assert fault_server.requests == []


async def test_the_baseline_ignores_a_dearer_tier_that_cannot_answer(cascade, knowledge) -> None:  # noqa: ANN001
    # Enabled, dearest by far, but its key is not set: the cascade skips it, so must the books.
    await ModelTier.objects.acreate(
        name="remote",
        base_url="http://127.0.0.1:9/v1",
        model="gpt",
        api_key_env="CHATBOT_TEST_KEY_THAT_IS_NOT_SET",
        order=99,
        enabled=True,
        price_input_per_mtok="1000",
        price_output_per_mtok="4000",
    )
    end = (await ask(QUESTION))[-1]
    assert end["baseline"]["tier"] == "big"
    [attempt] = end["attempts"]
    assert end["cost_if_largest"] == pytest.approx(
        float((Decimal(10) * attempt["tokens_in"] + Decimal(40) * attempt["tokens_out"]) / 10**6)
    )


async def test_a_baseline_quoting_more_passages_is_priced_on_its_own_prompt(
    cascade,
    knowledge,
    settings,  # noqa: ANN001
) -> None:
    # small quotes only its best passage, big both: big alone would have read a longer prompt.
    settings.PROMPT_MAX_PASSAGES = "small=1,3"
    end = (await ask(QUESTION))[-1]
    [attempt] = end["attempts"]
    assert attempt["tier"] == "small" and len(end["sources"]) == 1
    big = await ModelTier.objects.aget(name="big")
    passages = await retrieve(question=QUESTION)
    assert len(passages) == 2
    own = await tier_prompt(tier=big, passages=passages, turns=[], question=QUESTION)
    assert len(own.passages) == 2
    assert end["cost_if_largest"] == pytest.approx(
        float(big.cost(own.prompt_tokens, attempt["tokens_out"]))
    )
    assert end["baseline"] == {"tier": "big", "measured": False}


async def test_the_support_check_never_enters_the_baseline(cascade, knowledge, settings) -> None:  # noqa: ANN001
    settings.CASCADE_SUPPORT_CHECK = "small"
    await ModelTier.objects.filter(name="small").aupdate(threshold=0.0001)
    end = (await ask(QUESTION))[-1]
    [attempt] = end["attempts"]
    assert attempt["tier"] == "small" and attempt["check"] is not None
    # Paid: the answer call and the check; the baseline: big's prices on the answer call alone.
    assert attempt["cost"] > attempt["call_cost"] > 0
    assert end["cost"] == pytest.approx(attempt["cost"])
    assert end["cost_if_largest"] == pytest.approx(
        float((Decimal(10) * attempt["tokens_in"] + Decimal(40) * attempt["tokens_out"]) / 10**6)
    )


async def test_an_answer_no_model_gave_has_no_tier(cascade, knowledge, fault_server) -> None:  # noqa: ANN001
    await ModelTier.objects.acreate(
        name="down", base_url=fault_server.base_url, model="http500", order=1, timeout_seconds=5
    )
    end = (await ask(QUESTION, AnswerOptions(tiers=["down"])))[-1]
    assert end["status"] == Message.Status.ERROR and end["tier"] is None
    assert end["cost"] == 0, "a call the server refused costs nothing"
    message = await Message.objects.aget(id=end["message_id"])
    assert message.tier == "" and message.error_code == "http"
    # Asked once: no silent retry doubles the time before the next tier (or the error).
    assert [r["model"] for r in fault_server.requests] == ["http500"]


async def test_a_budget_that_cannot_afford_escalation_keeps_the_answer_on_its_tier(
    cascade, knowledge, fault_server, settings
) -> None:  # noqa: ANN001
    from chatbot.models import BudgetReservation

    # Room for the small tier's most on this prompt, not for the big one's as well.
    settings.DAILY_BUDGET_USD = 0.001
    await ModelTier.objects.filter(name="small").aupdate(threshold=1.0)
    end = (await ask(QUESTION))[-1]
    assert [a["tier"] for a in end["attempts"]] == ["small"]
    assert end["abstained"] and end["abstain_reason"] == "low_score"
    assert fault_server.requests == [], "the tier the budget did not reserve never ran"
    assert await BudgetReservation.objects.acount() == 0, "settled with the answer"


async def test_at_the_cap_a_refusing_budget_answers_politely_and_spends_nothing(
    cascade, knowledge, settings
) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_USD = 0.001
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    spent = await Conversation.objects.acreate(session_key="earlier")
    await Message.objects.acreate(
        conversation=spent, role=Message.Role.ASSISTANT, content="...", cost=Decimal("0.001")
    )
    events = await ask(QUESTION)
    end = events[-1]
    assert end["status"] == Message.Status.COMPLETE and end["error_code"] == "budget"
    assert end["attempts"] == [] and end["cost"] == 0 and end["tier"] is None
    text = "".join(e["text"] for e in events if e["type"] == "answer.delta")
    assert "today's limit" in text
