"""Questions on one topic reuse llama.cpp's cached prompt prefix through the passages they share."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from chatbot.pipeline import TierPrompt, tier_prompt
from chatbot.prompts import PASSAGES_OPEN, passages_ordered, prompt_sent
from retrieval.search import Passage
from routing.models import ModelTier
from tests.chatbot.conftest import llama_timings

ROOT = Path(__file__).resolve().parents[2]


def passage(chunk_id: int, document_id: int, title: str, text: str, similarity: float) -> Passage:
    return Passage(
        chunk_id=chunk_id,
        document_id=document_id,
        document_version=1,
        title=title,
        heading="",
        text=text,
        similarity=similarity,
    )


def topic(nonce: str) -> dict[str, Passage]:
    """Two long passages of one document both questions retrieve, and a short one each alone.

    The nonce keeps these prompts apart from any other test's in the shared model server."""
    policy = f"Returns policy {nonce}"
    return {
        "window": passage(
            5,
            1,
            policy,
            "You can return most items within 30 days of delivery for a full refund, as long "
            "as they are unused and in their original packaging with all labels attached. "
            "Sale items can be returned within 14 days. Personalised items, gift cards, "
            "opened software and hygiene products such as earrings cannot be returned unless "
            "they arrived damaged or were not what you ordered. " * 2,
            0.71,
        ),
        "refund": passage(
            6,
            1,
            policy,
            "Once your return reaches our warehouse we check it within three working days and "
            "refund the original payment method. Card refunds take up to five working days to "
            "appear, PayPal refunds one day, and gift card refunds are instant. The original "
            "shipping cost is refunded only when the whole order is returned. " * 2,
            0.66,
        ),
        "gift": passage(40, 7, f"Gift cards {nonce}", "Gift cards never expire.", 0.52),
        "store": passage(30, 3, f"Stores {nonce}", "Our Leeds store opens at nine.", 0.58),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("order", ["document", "rank"])
async def test_a_returning_topic_skips_prefilling_the_passages_it_shares(
    order: str,
    small_tier,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.PROMPT_PASSAGE_ORDER = order
    settings.PROMPT_MAX_PASSAGES = 3
    p = topic(uuid.uuid4().hex[:8])
    # Retrieval ranks the shared passages differently for the two questions (best first).
    first = await tier_prompt(
        tier=small_tier,
        passages=[p["refund"], p["window"], p["gift"]],
        turns=[],
        question="When do I get my money back?",
    )
    second = await tier_prompt(
        tier=small_tier,
        passages=[p["window"], p["refund"], p["store"]],
        turns=[],
        question="Can I return earrings?",
    )
    await sync_to_async(llama_timings)(small_tier, first.messages)
    reused = (await sync_to_async(llama_timings)(small_tier, second.messages))["cache_n"]

    counter = small_tier.token_counter()
    instructions = counter.count(second.messages[0]["content"])
    # The opening mark (two lines), then [1] and [2].
    shared = "\n".join(second.messages[-1]["content"].split("\n")[:4])
    await counter.prime([shared, PASSAGES_OPEN])
    through_shared = instructions + counter.count(shared)
    if order == "document":
        # Both quote the policy's passages first, in the document's order: only the rest and the
        # question are prefilled (a few tokens of slack where the pieces join).
        assert [x.chunk_id for x in second.passages] == [5, 6, 30]
        assert reused >= through_shared - 8
    else:
        # Best first: the prompts part right after the passages' opening mark.
        assert [x.chunk_id for x in second.passages] == [5, 6, 30]
        assert [x.chunk_id for x in first.passages] == [6, 5, 40]
        assert reused < instructions + counter.count(PASSAGES_OPEN) + 40 < through_shared


@pytest.mark.django_db
@pytest.mark.parametrize("order", ["reuse", "document"])
async def test_a_passage_quoted_first_before_is_quoted_first_again_after_other_questions(
    order: str,
    small_tier,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    """The server keeps earlier prompts in its RAM prompt cache; quoting the shared passage
    where an earlier prompt had it restarts from that prompt, other questions in between."""
    settings.PROMPT_PASSAGE_ORDER = order
    settings.PROMPT_MAX_PASSAGES = 3
    nonce = uuid.uuid4().hex[:8]
    p = topic(nonce)
    hours = passage(2, 0, f"Opening hours {nonce}", "Our phone line opens at eight.", 0.6)

    async def sent(passages: list[Passage], question: str) -> tuple[TierPrompt, dict]:
        prompt = await tier_prompt(tier=small_tier, passages=passages, turns=[], question=question)
        timings = await sync_to_async(llama_timings)(small_tier, prompt.messages)
        prompt_sent(small_tier.name, prompt.passages)  # as the pipeline does after a call
        return prompt, timings

    await sent([p["refund"]], "When do I get my money back?")
    # Two other questions: with the tests' two slots, both are overwritten since.
    await sent([p["store"]], "When does the Leeds store open?")
    await sent([p["gift"]], "Do gift cards expire?")
    # Retrieval finds the refund passage again, beside one of a document that comes first.
    second, timings = await sent([p["refund"], hours], "Is the refund on my card?")

    counter = small_tier.token_counter()
    instructions = counter.count(second.messages[0]["content"])
    through_first = "\n".join(second.messages[-1]["content"].split("\n")[:3])
    await counter.prime([through_first, PASSAGES_OPEN])
    if order == "reuse":
        assert [x.chunk_id for x in second.passages] == [6, 2]
        assert timings["cache_n"] >= instructions + counter.count(through_first) - 8
    else:
        # By document the other passage leads: only the instructions are reused.
        assert [x.chunk_id for x in second.passages] == [2, 6]
        assert timings["cache_n"] < instructions + counter.count(PASSAGES_OPEN) + 40


def test_the_reuse_order_follows_the_longest_run_the_tier_was_sent(settings) -> None:  # noqa: ANN001
    settings.PROMPT_PASSAGE_ORDER = "reuse"
    tier, other = f"t-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    a, b, c, d = (passage(n, n, f"Doc {n}", f"Text {n}", 0.5) for n in (1, 2, 3, 4))
    assert passages_ordered([d, b, a], tier=tier) == [a, b, d]  # nothing sent: by document
    prompt_sent(tier, [c, b])
    prompt_sent(tier, [d, a])
    assert passages_ordered([a, b, c], tier=tier) == [c, b, a]
    assert passages_ordered([a, b, d], tier=tier) == [d, a, b]
    assert passages_ordered([a, b, d], tier=other) == [a, b, d]  # another server's cache
    # Of two runs that go on, the one sent last.
    prompt_sent(tier, [b, a])
    assert passages_ordered([a, b, d], tier=tier) == [b, a, d]
    # The longest run wins over a shorter one sent later: the same passages asked again get
    # the same prompt.
    prompt_sent(tier, [d])
    assert passages_ordered([a, b, d], tier=tier) == [b, a, d]
    # A passage cut to fit is not the one that was sent.
    cut = passage(4, 4, "Doc 4", "Te", 0.5)
    assert passages_ordered([a, cut], tier=tier) == [a, cut]


def test_where_no_earlier_start_applies_the_most_quoted_passage_leads(settings) -> None:  # noqa: ANN001
    settings.PROMPT_PASSAGE_ORDER = "reuse"
    tier = f"t-{uuid.uuid4().hex[:8]}"
    a, b, c, d = (passage(n, n, f"Doc {n}", f"Text {n}", 0.5) for n in (1, 2, 3, 4))
    prompt_sent(tier, [a, d])
    prompt_sent(tier, [c, d])
    # Neither b nor d started a prompt; d was quoted twice: the next question on its topic
    # finds it at the start.
    assert passages_ordered([b, d], tier=tier) == [d, b]
    settings.PROMPT_PASSAGE_ORDER = "document"
    assert passages_ordered([b, d], tier=tier) == [b, d]


@pytest.mark.parametrize("order", ["reuse", "document", "rank"])
async def test_a_citation_names_the_passage_quoted_under_its_number(order: str, settings) -> None:  # noqa: ANN001
    settings.PROMPT_PASSAGE_ORDER = order
    settings.PROMPT_MAX_PASSAGES = 3
    p = topic("x")
    ranked = [p["store"], p["refund"], p["gift"]]
    tier = ModelTier(name="medium", context_window=4096, max_answer_tokens=64, local_model="")
    prompt = await tier_prompt(tier=tier, passages=ranked, turns=[], question="Refund time?")
    # Nothing was sent to this tier name: "reuse" falls back to the document order.
    tier.name = f"medium-{uuid.uuid4().hex[:8]}"
    expected = [30, 6, 40] if order == "rank" else [6, 30, 40]
    assert [x.chunk_id for x in prompt.passages] == expected
    quoted = prompt.messages[-1]["content"]
    by_number = {
        int(n): text for n, text in re.findall(r"^\[(\d+)\] \([^)]*\) (.*)$", quoted, re.M)
    }
    texts = {x.chunk_id: x.text.strip() for x in ranked}
    for source in prompt.sources():
        assert by_number[source["n"]].strip() == texts[source["chunk_id"]]
    # The scorer reads the same passages in the same order.
    assert [t.strip() for t in prompt.cascade_tier().passage_texts] == [texts[c] for c in expected]


def test_an_unknown_passage_order_is_refused_with_the_choices() -> None:
    env = {**os.environ, "PROMPT_PASSAGE_ORDER": "sideways"}
    result = subprocess.run(
        [sys.executable, "-c", "import chatbot.settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "PROMPT_PASSAGE_ORDER='sideways': expected 'reuse', 'document' or 'rank'" in result.stderr
    )
