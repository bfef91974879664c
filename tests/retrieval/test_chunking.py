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
    # Pieces of 25 words (30 less the overlap), each after the first led by 5 words of the last.
    assert [c.token_count for c in chunks] == [25, 30, 30, 30]
    assert chunks[1].text.startswith("word20 word21 word22 word23 word24 word25 ")
    assert chunks[-1].text.endswith("word99")


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


def test_packed_paragraphs_are_counted_once_each_and_keep_their_chunk_counts() -> None:
    # Counting is most of chunking's time: each packed text is counted once, as a candidate,
    # and that count is the chunk's (before: the paragraph, the candidate and the chunk again).
    counted: list[str] = []

    def counter(text: str) -> int:
        counted.append(text)
        return words(text)

    paragraphs = [" ".join(f"p{n}w{i}" for i in range(7)) for n in range(9)]
    chunks = chunk_text(
        "\n\n".join(paragraphs), max_tokens=20, overlap_tokens=0, count_tokens=counter
    )
    assert [c.text.count("\n\n") + 1 for c in chunks] == [2, 2, 2, 2, 1]
    assert all(c.token_count == words(c.text) for c in chunks)
    # The first paragraph of each chunk alone, then one candidate per further paragraph.
    assert len(counted) == len(chunks) + len(paragraphs) - 1


def test_duplicate_passages_are_skipped() -> None:
    text = "## A\n\nCall us on 0800 123.\n\n## B\n\nCall   us on 0800 123."
    assert len(chunk_text(text, max_tokens=200, overlap_tokens=30, count_tokens=words)) == 1


def test_embedders_without_a_tokenizer_count_cl100k() -> None:
    assert Embedder().count_tokens("hello world") == cl100k_count("hello world") == 2


PROSE = (
    "Orders placed before noon leave the warehouse the same day, unless the carrier has a "
    "holiday. A parcel that cannot be delivered waits at the local depot for seven days; after "
    "that it returns to us and the refund starts automatically. Customers in remote areas, "
    "including the islands, should allow two extra days. Tracking links arrive by e-mail once "
    "the label is printed, and they work without an account. Fragile goods travel in double "
    "boxes with foam corners, which is why they cost a little more to send. If a box arrives "
    "damaged, photograph it before opening it: the carrier asks for the pictures. Large items "
    "such as sofas are delivered by a two-person team who can take the packaging away."
)


def test_long_paragraphs_end_at_sentence_or_clause_ends_never_inside_words() -> None:
    chunks = chunk_text(PROSE, max_tokens=25, overlap_tokens=6, count_tokens=cl100k_count)
    assert len(chunks) > 3
    vocabulary = set(re.findall(r"[\w-]+", PROSE))
    for chunk in chunks:
        assert chunk.token_count <= 25
        assert chunk.text.rstrip()[-1] in ".,;:!?", chunk.text
        # every word of every piece is a whole word of the source
        assert set(re.findall(r"[\w-]+", chunk.text)) <= vocabulary
    # nothing lost: the pieces without their overlaps cover the whole paragraph in order
    assert " ".join(re.findall(r"[\w-]+", PROSE))[-60:] in " ".join(
        re.findall(r"[\w-]+", chunks[-1].text)
    )


def test_hash_lines_inside_code_fences_are_not_headings() -> None:
    text = (
        "# Guide\n\n## Install\n\nRun this:\n\n```bash\n# update the index first\napt update\n"
        "## not a heading either\n```\n\nThen restart.\n\n~~~~\n# still code\n~~~~\n\n"
        "## Configure\n\nEdit the file."
    )
    chunks = chunk_text(text, max_tokens=200, overlap_tokens=0, count_tokens=cl100k_count)
    assert [c.heading for c in chunks] == ["Install", "Configure"]
    assert "# update the index first" in chunks[0].text
    assert "# still code" in chunks[0].text and "Then restart." in chunks[0].text


def test_paged_text_gives_each_chunk_its_page_and_keeps_the_heading_across_pages() -> None:
    text = "# Manual\n\n## Setup\n\nPlug it in.\f\fStill setting up.\f## Care\n\nWipe it dry."
    chunks = chunk_text(
        text, max_tokens=200, overlap_tokens=0, count_tokens=cl100k_count, paged=True
    )
    assert [(c.page, c.heading, c.text) for c in chunks] == [
        (1, "Setup", "Plug it in."),
        (3, "Setup", "Still setting up."),
        (4, "Care", "Wipe it dry."),
    ]
    # unpaged text: a form feed is only a line break and no chunk has a page
    flat = chunk_text(text, max_tokens=200, overlap_tokens=0, count_tokens=cl100k_count)
    assert {c.page for c in flat} == {None} and len(flat) == 2


def test_a_long_table_is_cut_between_rows_each_piece_with_the_header() -> None:
    rows = "\n".join(f"| Lamp {i} | {10 + i} euros | brass |" for i in range(40))
    table = f"| Lamp | Price | Finish |\n| --- | --- | --- |\n{rows}"
    chunks = chunk_text(
        f"## Prices\n\n{table}", max_tokens=60, overlap_tokens=10, count_tokens=cl100k_count
    )
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.token_count <= 60 and chunk.heading == "Prices"
        lines = chunk.text.splitlines()
        assert lines[:2] == ["| Lamp | Price | Finish |", "| --- | --- | --- |"]
        assert all(re.fullmatch(r"\| Lamp \d+ \| \d+ euros \| brass \|", ln) for ln in lines[2:])
    cut = [ln for c in chunks for ln in c.text.splitlines()[2:]]
    assert cut == rows.splitlines()  # every row once, in order
