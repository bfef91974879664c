"""CASCADE_SUPPORT_CHECK through the pipeline: the check is asked, billed and stored, or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chatbot.models import Conversation, Message
from chatbot.pipeline import answer_question
from routing.models import ModelTier, ScorerWeights
from tests.routing.fault_server import PROMPT_TOKENS, FaultServer

pytestmark = [pytest.mark.django_db(transaction=True)]

ANSWER = "You have 30 days to return an item [1]"
DOC = (
    "# Returns policy\n\n## Return window\nYou can return most items within 30 days of "
    "delivery. Items must be unused and in their original packaging.\n"
)


@pytest.fixture
def knowledge(tmp_path: Path, django_db_blocker) -> None:  # noqa: ANN001
    (tmp_path / "returns.md").write_text(DOC, encoding="utf-8")
    with django_db_blocker.unblock():
        call_command(
            "load_demo_knowledge", folder=str(tmp_path), verbosity=0, stdout=open(os.devnull, "w")
        )


def _tier(fault_server: FaultServer, check: str) -> None:
    ModelTier.objects.update(enabled=False)
    ModelTier.objects.update_or_create(
        name="checked",
        defaults=dict(
            base_url=fault_server.base_url,
            model=f"ok:{ANSWER}|check={check}",
            order=5,
            enabled=True,
            threshold=0.5,
            max_answer_tokens=32,
            timeout_seconds=1,
            price_input_per_mtok="1",
            price_output_per_mtok="4",
        ),
    )
    # The score leans on the check; a missing check is neutral (0.6 -> P(right) 0.92).
    ScorerWeights.objects.update_or_create(
        name="default", defaults={"weights": {"check_yes": 4.0, "check_yes_neutral": 0.6}}
    )


async def _ask() -> tuple[dict, Message]:
    conversation = await Conversation.objects.acreate(session_key="test")
    user = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="How long do I have to return?"
    )
    events = [e async for e in answer_question(conversation=conversation, user_message=user)]
    end = events[-1]
    assert end["type"] == "answer.end", events
    return end, await Message.objects.aget(pk=end["message_id"])


@pytest.mark.parametrize(
    ("check", "p_yes", "error"), [("ok:yes", 1.0, ""), ("http500", None, "http")]
)
async def test_setting_on_asks_bills_and_stores_the_check(
    knowledge,  # noqa: ANN001
    fault_server,  # noqa: ANN001
    settings,  # noqa: ANN001
    check: str,
    p_yes: float | None,
    error: str,
) -> None:
    settings.CASCADE_SUPPORT_CHECK = "checked"
    settings.CASCADE_START_TIER = "checked"
    settings.CASCADE_RELEVANCE_FLOOR = 0.0
    await sync_to_async(_tier)(fault_server, check)
    end, message = await _ask()
    attempt = end["attempts"][0]
    assert end["status"] == "complete" and not end["abstained"]
    assert message.content.strip() == ANSWER
    assert attempt["outcome"] == "accepted" and attempt["check"]["error"] == error
    assert attempt["check"]["p_yes"] == p_yes
    assert ("check_yes" in attempt["signals"]) is (p_yes is not None)
    assert message.attempts[0]["check"] == attempt["check"]
    if not error:
        # Answer and check both paid: 2 x the prompt in, the answer's words + 1 token out.
        assert message.tokens_in == 2 * PROMPT_TOKENS
        assert float(message.cost) == pytest.approx(
            (2 * PROMPT_TOKENS * 1 + (len(ANSWER.split()) + 1) * 4) / 1e6
        )


async def test_setting_off_asks_no_check(
    knowledge,  # noqa: ANN001
    fault_server,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.CASCADE_SUPPORT_CHECK = "off"
    settings.CASCADE_START_TIER = "checked"
    settings.CASCADE_RELEVANCE_FLOOR = 0.0
    await sync_to_async(_tier)(fault_server, "ok:yes")
    before = len(fault_server.requests)
    end, message = await _ask()
    assert end["attempts"][0]["check"] is None and message.tokens_in == PROMPT_TOKENS
    assert len(fault_server.requests) == before + 1


async def test_reranked_answers_carry_relevance_and_the_rerank_floor_declines(
    knowledge,  # noqa: ANN001
    fault_server,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.RETRIEVAL_RERANK = True
    settings.CASCADE_SUPPORT_CHECK = "checked"
    settings.CASCADE_START_TIER = "checked"
    settings.CASCADE_RELEVANCE_FLOOR = 0.0
    settings.CASCADE_RERANK_FLOOR = 0.5
    settings.RETRIEVAL_MIN_SIMILARITY = 0.0  # every passage is a candidate: the reranker decides
    await sync_to_async(_tier)(fault_server, "ok:yes")
    before = len(fault_server.requests)
    end, message = await _ask()
    attempt = end["attempts"][0]
    # The cross-encoder finds the return window relevant: answered, with its relevance scored.
    assert end["status"] == "complete" and attempt["outcome"] == "accepted"
    assert attempt["signals"]["top_relevance"] > 0.5
    assert attempt["signals"]["cited_relevance"] == attempt["signals"]["top_relevance"]
    assert "within 30 days" in str(fault_server.requests[before + 1]["messages"])
    # A question the passage shares a word with but is not about: retrieved, yet declined on
    # its cross-encoder relevance before any model runs.
    conversation = await Conversation.objects.acreate(session_key="test")
    user = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.USER,
        content="When did the stolen Mona Lisa return to the Louvre?",
    )
    count = len(fault_server.requests)
    events = [e async for e in answer_question(conversation=conversation, user_message=user)]
    assert events[-1]["abstained"] and len(fault_server.requests) == count
    declined = await Message.objects.aget(pk=events[-1]["message_id"])
    assert declined.abstain_reason == "no_passages" and declined.cost == 0


async def test_the_check_tier_need_not_be_in_the_cascade(
    knowledge,  # noqa: ANN001
    fault_server,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.CASCADE_SUPPORT_CHECK = "judge"
    settings.CASCADE_START_TIER = "checked"
    settings.CASCADE_RELEVANCE_FLOOR = 0.0
    await sync_to_async(_tier)(fault_server, "ok:yes")
    await ModelTier.objects.acreate(
        name="judge",
        base_url=fault_server.base_url,
        model="ok:unused|check=ok:no",
        order=9,
        enabled=False,  # not in the cascade: only asked for its verdict
        timeout_seconds=1,
        price_input_per_mtok="10",
        price_output_per_mtok="40",
    )
    end, _message = await _ask()
    check = end["attempts"][0]["check"]
    assert check["tier"] == "judge" and check["p_yes"] == 0.0
    assert [a["tier"] for a in end["attempts"]] == ["checked"]
