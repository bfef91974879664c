"""Token-aware chunking: size bound, overlap, headings kept, duplicates skipped."""

from __future__ import annotations

from retrieval.chunking import chunk_text
from routing.tokens import count_tokens


def test_long_section_is_split_within_the_token_budget_with_overlap() -> None:
    text = "# Lamps\n\n## Orla\n\n" + " ".join(
        f"Step {i}: fit part {i * 7} to the brass stem." for i in range(60)
    )
    chunks = chunk_text(text, max_tokens=80, overlap_tokens=20)
    assert len(chunks) > 3
    assert all(c.token_count <= 80 and c.heading == "Orla" for c in chunks)
    # consecutive pieces share their boundary text
    assert chunks[0].text[-30:] in chunks[1].text


def test_paragraphs_are_packed_and_headings_nest() -> None:
    text = "# Help\n\n## Orders\n\n### Changes\n\nFirst.\n\nSecond.\n\n## Returns\n\nThird."
    chunks = chunk_text(text, max_tokens=200, overlap_tokens=30)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Orders > Changes", "First.\n\nSecond."),
        ("Returns", "Third."),
    ]
    assert chunks[0].token_count == count_tokens("First.\n\nSecond.")


def test_duplicate_passages_are_skipped() -> None:
    text = "## A\n\nCall us on 0800 123.\n\n## B\n\nCall   us on 0800 123."
    assert len(chunk_text(text, max_tokens=200, overlap_tokens=30)) == 1
