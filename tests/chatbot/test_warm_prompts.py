"""A restarted model server reads the passage sets customers' answers quoted most often, and a new
process quotes those sets in the order the server read them: the first questions on popular
topics after a restart prefill only their own words."""

from __future__ import annotations

import uuid

import pytest

from chatbot.management.commands.run_stack import Command
from chatbot.models import Conversation, Message
from chatbot.prompts import (
    build_messages,
    passages_ordered,
    popular_passage_sets,
    prompts_seed,
    warm_messages,
)
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.services import document_ingest_text
from routing.models import ModelTier
from tests.chatbot.conftest import llama_timings

pytestmark = pytest.mark.django_db


def topics(nonce: str, count: int) -> list[list[int]]:
    """`count` documents of two sections each, with words no other test sends (the model server
    is shared); each one's chunk ids in document order."""
    sets = []
    for n in range(count):
        text = "\n\n".join(
            f"## {part} {nonce} {n}\n\n"
            + f"The {part.lower()} rule {nonce} number {n} says parcels wait {n + 3} days at the "
            "depot, then go back to the sender unless the customer books a new delivery day. " * 6
            for part in ("Collection", "Returns")
        )
        document = document_ingest_text(
            source_name=f"warm-{nonce}-{n}.md", title=f"Depot {nonce} {n}", text=text
        )
        sets.append(list(document.chunks.order_by("ordinal").values_list("id", flat=True)))
    return sets


def answered(tier: str, *chunk_sets: list[int], **fields: object) -> None:
    """One stored answer of `tier` per set, quoting those chunks in that order."""
    conversation = Conversation.objects.create(session_key=uuid.uuid4().hex)
    for ids in chunk_sets:
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content="An answer.",
            tier=tier,
            sources=[{"n": n, "chunk_id": i} for n, i in enumerate(ids, start=1)],
            **fields,
        )


def test_the_sets_quoted_most_often_come_first_each_in_the_order_it_was_quoted() -> None:
    a, b, c, d = topics(uuid.uuid4().hex[:8], 4)
    tier = f"t-{uuid.uuid4().hex[:6]}"
    answered(tier, a, a, a)
    answered(tier, b[::-1], b[::-1])  # quoted in the other order than the document's
    answered(tier, c[:1], c[:1])  # as often as b, but later
    answered(tier, d, d, d, d, cached=True)  # from the answer cache: no prompt was sent
    answered(tier, d, d, d, d, origin=Message.Origin.EVALUATION)
    answered("another-tier", d, d, d, d)
    # A passage whose document has changed since is no longer searched: its set is left out.
    answered(tier, [b[0], 10**9], [b[0], 10**9], [b[0], 10**9], [b[0], 10**9])

    sets = popular_passage_sets(tier, 5)

    assert [[p.chunk_id for p in s] for s in sets] == [a, c[:1], b[::-1]]
    first = Chunk.objects.get(id=a[0])
    assert (sets[0][0].text, sets[0][0].heading, sets[0][0].title) == (
        first.text,
        first.heading,
        first.document.title,
    )
    assert [[p.chunk_id for p in s] for s in popular_passage_sets(tier, 2)] == [a, c[:1]]
    assert popular_passage_sets(tier, 0) == []


def test_a_set_whose_document_was_replaced_is_no_longer_read() -> None:
    (a,) = topics(uuid.uuid4().hex[:8], 1)
    tier = f"t-{uuid.uuid4().hex[:6]}"
    answered(tier, a)
    assert len(popular_passage_sets(tier, 5)) == 1
    KnowledgeDocument.objects.filter(chunks__id=a[0]).update(served_version=2)
    assert popular_passage_sets(tier, 5) == []


def test_a_new_process_quotes_a_popular_set_in_the_order_its_server_read_it(settings) -> None:  # noqa: ANN001
    settings.PROMPT_PASSAGE_ORDER = "reuse"
    (a,) = topics(uuid.uuid4().hex[:8], 1)
    tier = f"t-{uuid.uuid4().hex[:6]}"
    answered(tier, a[::-1])
    (warmed,) = popular_passage_sets(tier, 1)
    # Nothing sent yet: this process would quote them in the document's order.
    assert [p.chunk_id for p in passages_ordered(warmed, tier=tier)] == a

    assert prompts_seed(tier, 1) == 1

    assert [p.chunk_id for p in passages_ordered(warmed[::-1], tier=tier)] == a[::-1]
    # The server reads the same prompt up to the question.
    last = warm_messages(tier, 1)[-1]
    assert last == build_messages(passages=warmed, history=[], question="")


def test_the_instructions_alone_are_read_when_the_answers_cannot_be(monkeypatch) -> None:  # noqa: ANN001
    def broken(tier: str, limit: int) -> list:
        raise RuntimeError("database away")

    monkeypatch.setattr("chatbot.prompts.popular_passage_sets", broken)
    assert warm_messages("medium", 16) == [build_messages(passages=[], history=[], question="")]


@pytest.mark.django_db(transaction=True)
def test_a_started_server_reads_the_popular_sets_so_their_questions_prefill_only_their_words(
    small_tier: ModelTier,
    settings,  # noqa: ANN001
) -> None:
    settings.LOCAL_MODEL_WARM_PROMPTS = 4
    sets = topics(uuid.uuid4().hex[:8], 5)
    answered(small_tier.name, *(s for s in sets[:4] for _ in range(2)), sets[4])
    popular = popular_passage_sets(small_tier.name, 4)
    assert [[p.chunk_id for p in s] for s in popular] == sets[3::-1]  # ties: the latest first

    Command._warm_models([small_tier]).join(300)

    question = "How many days does my parcel wait at the depot?"
    # More than the server's two slots were read: the first ones come back from its RAM cache.
    for passages in popular:
        messages = build_messages(passages=passages, history=[], question=question)
        assert llama_timings(small_tier, messages)["prompt_n"] <= 24, [p.chunk_id for p in passages]
    # A set it did not read (quoted once, below the four) is prefilled whole.
    (rest,) = popular_passage_sets(small_tier.name, 5)[4:]
    cold = llama_timings(small_tier, build_messages(passages=rest, history=[], question=question))[
        "prompt_n"
    ]
    assert cold > 100
