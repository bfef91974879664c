"""Token-aware chunking: size bound, overlap, headings kept, duplicates skipped."""

from __future__ import annotations

import re

from retrieval.chunking import chunk_text
from retrieval.embedders import Embedder, cl100k_count


def words(text: str) -> int:
    """A counter of another kind: the chunker measures with whatever it is given."""
    return len(text.split())


def test_long_section_is_split_within_the_token_budget_with_overlap() -> None:
    text = "# Lamps\n\n## Orla\n\n" + " ".join(
        f"Step {i}: fit part {i * 7} to the brass stem." for i in range(60)
    )
    chunks = chunk_text(text, max_tokens=80, overlap_tokens=20, count_tokens=cl100k_count)
    assert len(chunks) > 3
    assert all(c.token_count <= 80 and c.heading == "Orla" for c in chunks)
    assert all(c.token_count == cl100k_count(c.text) for c in chunks)
    # consecutive pieces share their boundary text
    for first, second in zip(chunks, chunks[1:], strict=False):
        assert first.text[-30:] in second.text
    # cut between sentences, never inside a word: every piece is a run of whole steps
    for chunk in chunks:
        assert re.fullmatch(r"(Step \d+: fit part \d+ to the brass stem\. ?)+", chunk.text)


def test_sizes_are_in_tokens_of_the_counter_given() -> None:
    body = " ".join(f"word{i}" for i in range(100))
    chunks = chunk_text(body, max_tokens=30, overlap_tokens=5, count_tokens=words)
    assert [c.token_count for c in chunks] == [30, 30, 30, 25]
    assert chunks[1].text.startswith("word25 ") and chunks[-1].text.endswith("word99")


def test_a_word_longer_than_the_budget_is_cut_inside() -> None:
    code = "".join(chr(ord("a") + i % 26) for i in range(50))
    chunks = chunk_text(f"See {code} now.", max_tokens=10, overlap_tokens=0, count_tokens=len)
    assert all(c.token_count <= 10 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == f"See{code}now."


def test_paragraphs_are_packed_and_headings_nest() -> None:
    text = "# Help\n\n## Orders\n\n### Changes\n\nFirst.\n\nSecond.\n\n## Returns\n\nThird."
    chunks = chunk_text(text, max_tokens=200, overlap_tokens=30, count_tokens=cl100k_count)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Orders > Changes", "First.\n\nSecond."),
        ("Returns", "Third."),
    ]
    assert chunks[0].token_count == cl100k_count("First.\n\nSecond.") == 4


def test_duplicate_passages_are_skipped() -> None:
    text = "## A\n\nCall us on 0800 123.\n\n## B\n\nCall   us on 0800 123."
    assert len(chunk_text(text, max_tokens=200, overlap_tokens=30, count_tokens=words)) == 1


def test_embedders_without_a_tokenizer_count_cl100k() -> None:
    assert Embedder().count_tokens("hello world") == cl100k_count("hello world") == 2
