"""Each tier's prompt is built before the cascade, and the scorer sees exactly what it shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.pipeline import _prompts_remember, tier_prompt
from chatbot.prompts import passages_quoted
from retrieval.search import Passage
from routing.cascade import Attempt, CascadeResult
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


RANKED = [
    passage(7, 9, 0.82, "Express delivery costs 6 euros."),
    passage(3, 2, 0.55, "Standard delivery is free above 50 euros."),
    passage(5, 4, 0.41, "Orders ship from Rotterdam."),
    passage(1, 1, 0.40, "Gift cards never expire."),
    passage(8, 5, 0.30, "Parcels are insured."),
]


def _medium() -> ModelTier:
    return ModelTier(
        name="medium",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        context_window=4096,
        max_answer_tokens=64,
        local_model="x",
    )


async def _quoted(tier: ModelTier, turns: list | None = None) -> list[int]:
    prompt = await tier_prompt(tier=tier, passages=RANKED, turns=turns or [], question="Express?")
    return sorted(p.chunk_id for p in prompt.passages)


@pytest.mark.parametrize(
    ("held", "reach", "quoted"),
    [
        ((7, 5), 4, [5, 7]),  # the server holds the best passage and the 3rd: quoted again
        ((7, 1), 4, [1, 7]),  # the 4th is within reach
        ((7, 8), 4, [3, 7]),  # the 5th is not
        ((3, 5), 4, [3, 7]),  # a set without the best passage is not quoted
        ((7, 5, 1), 4, [3, 7]),  # nor one of another size
        ((7, 5), 0, [3, 7]),  # reuse off: the best two
        ((7, 5), 2, [3, 7]),  # a reach no deeper than the count changes nothing
    ],
)
async def test_a_returning_topic_quotes_a_set_the_server_holds(
    held: tuple[int, ...],
    reach: int,
    quoted: list[int],
    settings,  # noqa: ANN001
) -> None:
    settings.PROMPT_MAX_PASSAGES = "medium=2,3"
    settings.PROMPT_REUSE_RANK = reach
    tier = _medium()
    by_id = {p.chunk_id: p for p in RANKED}
    passages_quoted(server=(tier.base_url, tier.model), passages=[by_id[i] for i in held])
    assert await _quoted(tier) == quoted


async def test_only_a_first_question_to_the_same_server_reuses_a_set(settings) -> None:  # noqa: ANN001
    settings.PROMPT_MAX_PASSAGES = "medium=2,3"
    settings.PROMPT_REUSE_RANK = 4
    tier = _medium()
    passages_quoted(server=(tier.base_url, tier.model), passages=[RANKED[0], RANKED[2]])
    # A follow-up's history comes before its passages: nothing cached to gain, the best two.
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert await _quoted(tier, turns) == [3, 7]
    # Another server (a tier on another URL) holds nothing of it.
    other = _medium()
    other.base_url = "http://127.0.0.1:10/v1"
    assert await _quoted(other) == [3, 7]
    assert await _quoted(tier) == [5, 7]


async def test_a_set_is_remembered_only_for_the_tiers_that_read_their_prompt(settings) -> None:  # noqa: ANN001
    settings.PROMPT_MAX_PASSAGES = "medium=2,3"
    settings.PROMPT_REUSE_RANK = 4
    medium, large = _medium(), _medium()
    large.name, large.base_url = "large", "http://127.0.0.1:11/v1"
    # Another question put the 1st and 3rd passages in both prompts, but only medium read its.
    other = [RANKED[0], RANKED[2], RANKED[1], RANKED[3]]
    prompts = [
        await tier_prompt(tier=t, passages=other, turns=[], question="Rotterdam?")
        for t in (medium, large)
    ]
    assert all(p.reusable for p in prompts)
    result = CascadeResult(
        attempts=[Attempt(tier="medium", tokens_in=120), Attempt(tier="large", outcome="skipped:x")]
    )
    _prompts_remember(prompts, result)
    assert await _quoted(medium) == [5, 7]
    settings.PROMPT_MAX_PASSAGES = "2"
    assert await _quoted(large) == [3, 7]


async def test_a_prompt_with_a_cut_passage_is_not_reusable(settings) -> None:  # noqa: ANN001
    settings.PROMPT_MAX_PASSAGES = 2
    long = [passage(4, 4, 0.9, "word " * 3000), *RANKED]
    prompt = await tier_prompt(tier=_medium(), passages=long, turns=[], question="Express?")
    assert prompt.passages[-1].text.endswith(" ...") and not prompt.reusable
