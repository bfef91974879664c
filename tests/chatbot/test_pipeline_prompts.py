"""Each tier's prompt is built before the cascade, and the scorer sees exactly what it shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.pipeline import tier_prompt
from retrieval.search import Passage
from routing.models import ModelTier

ROOT = Path(__file__).resolve().parents[2]


def passage(chunk_id: int, document_id: int, similarity: float, text: str) -> Passage:
    return Passage(
        chunk_id=chunk_id,
        document_id=document_id,
        document_version=1,
        title=f"Doc {document_id}",
        heading="",
        text=text,
        similarity=similarity,
    )


async def test_the_cascade_gets_the_passages_in_the_prompts_order_and_only_those(settings) -> None:  # noqa: ANN001
    settings.PROMPT_MAX_PASSAGES = 3
    # Retrieval order (best first); the prompt sorts by document for prefix reuse.
    ranked = [
        passage(7, 9, 0.82, "Express delivery costs 6 euros."),
        passage(3, 2, 0.55, "Standard delivery is free above 50 euros."),
        passage(5, 4, 0.41, "Orders ship from Rotterdam."),
        passage(1, 1, 0.40, "Gift cards never expire."),  # retrieved, but not in the prompt
    ]
    tier = ModelTier(name="medium", context_window=4096, max_answer_tokens=64, local_model="x")
    prompt = await tier_prompt(tier=tier, passages=ranked, turns=[], question="Express price?")
    cascade_tier = prompt.cascade_tier()
    assert [p.chunk_id for p in prompt.passages] == [3, 5, 7]
    assert list(cascade_tier.passage_similarities) == [0.55, 0.41, 0.82]
    assert "Gift cards" not in " ".join(cascade_tier.passage_texts)
    quoted = cascade_tier.messages[-1]["content"]
    assert quoted.index("[1] (Doc 2)") < quoted.index("[3] (Doc 9) Express")
    # The sources a citation [3] resolves to are the same passage.
    assert prompt.sources()[2]["chunk_id"] == 7 and prompt.sources()[2]["similarity"] == 0.82


async def test_each_tier_quotes_its_own_number_of_passages(settings) -> None:  # noqa: ANN001
    settings.PROMPT_MAX_PASSAGES = "medium=1,small=2,3"
    ranked = [
        passage(7, 9, 0.82, "Express delivery costs 6 euros."),
        passage(3, 2, 0.55, "Standard delivery is free above 50 euros."),
        passage(5, 4, 0.41, "Orders ship from Rotterdam."),
        passage(1, 1, 0.40, "Gift cards never expire."),
    ]
    quoted = {}
    for name in ("small", "medium", "large"):
        tier = ModelTier(name=name, context_window=4096, max_answer_tokens=64, local_model="x")
        prompt = await tier_prompt(tier=tier, passages=ranked, turns=[], question="Express?")
        quoted[name] = sorted(p.chunk_id for p in prompt.passages)
        # The scorer reads exactly the passages this tier was shown.
        assert sorted(prompt.cascade_tier().passage_texts) == sorted(
            p.text for p in prompt.passages
        )
    # The best-ranked passages, as many as the tier's count (the rest of the setting's default).
    assert quoted == {"medium": [7], "small": [3, 7], "large": [3, 5, 7]}


@pytest.mark.parametrize("setting", ["0", "medium=0", "medium=two", "=2"])
def test_a_bad_passage_count_is_refused_with_its_value(setting) -> None:  # noqa: ANN001
    result = subprocess.run(
        [sys.executable, "-c", "import chatbot.settings"],
        cwd=ROOT,
        env={**os.environ, "PROMPT_MAX_PASSAGES": setting},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"PROMPT_MAX_PASSAGES={setting!r}" in result.stderr


async def test_a_citation_gives_the_page_of_a_paged_source() -> None:
    on_page = Passage(
        chunk_id=4,
        document_id=2,
        document_version=1,
        title="Manual",
        heading="Warranty",
        text="The warranty covers the wiring for five years.",
        similarity=0.7,
        page=4,
    )
    tier = ModelTier(name="medium", context_window=4096, max_answer_tokens=64, local_model="x")
    prompt = await tier_prompt(
        tier=tier,
        passages=[on_page, passage(1, 1, 0.6, "Gift cards never expire.")],
        turns=[],
        question="How long is the warranty?",
    )
    assert {s["chunk_id"]: s["page"] for s in prompt.sources()} == {4: 4, 1: None}


@pytest.mark.django_db
async def test_a_local_prompt_is_counted_by_its_own_server(small_tier) -> None:  # noqa: ANN001
    from routing.cascade import tier_call

    ranked = [passage(1, 1, 0.8, "Returns are accepted within 30 days of delivery. " * 8)]
    turns = [
        {"role": "user", "content": "Hello there, I have a question about an order."},
        {"role": "assistant", "content": "Of course, what would you like to know?"},
    ]
    prompt = await tier_prompt(
        tier=small_tier, passages=ranked, turns=turns, question="How long for returns?"
    )
    call = await tier_call(tier=prompt.cascade_tier(), messages=prompt.messages, max_tokens=1)
    assert not call.error and not call.estimated
    # The server's own count of the prompt, against ours: ours adds the role markers' margin.
    overhead = call.tokens_in - sum(
        small_tier.token_counter().count(m["content"]) for m in prompt.messages
    )
    assert 0 <= overhead <= 8 * len(prompt.messages)
    assert call.tokens_in <= prompt.prompt_tokens <= call.tokens_in + 8 * len(prompt.messages)
