"""Token-aware chunking that keeps each passage's document title, section heading and page.

Sizes are measured with a token counter the caller passes (text -> number of tokens). Ingestion
passes the embedder's own (Embedder.count_tokens: for MiniLM its WordPiece tokenizer, without
[CLS]/[SEP]), so CHUNK_TOKENS and CHUNK_OVERLAP_TOKENS are tokens of the model that embeds the
passage, and a passage is never silently truncated by it.

A paragraph longer than the budget is cut by semchunk, which splits at the most meaningful
boundary that fits (paragraph, line, sentence, clause, then word), so passages end at sentence or
clause ends and never inside a word unless one word alone is over the budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import semchunk

TokenCounter = Callable[[str], int]

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
# A fenced code block opens with 3+ backticks or tildes (up to 3 spaces in) and closes with at
# least as many of the same character: '#' lines inside it are code, not headings.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# Where an overlap may begin: after a sentence end, else after a clause end, else after a space.
_SENTENCE_START = re.compile(r"[.!?][\"')\]]*\s+")
_CLAUSE_START = re.compile(r"[,;:\u2013\u2014][\"')\]]*\s+")
_WORD_START = re.compile(r"\s+")
PAGE_BREAK = "\f"


@dataclass(frozen=True)
class ChunkDraft:
    heading: str
    text: str
    token_count: int
    page: int | None = None


@dataclass(frozen=True)
class Section:
    heading: str  # the heading path, "Orders > Changes"; "" before the first section heading
    body: str
    page: int | None  # 1-based page of a paged text, else None


def split_sections(markdown: str, *, paged: bool = False) -> list[Section]:
    """Split markdown into sections by heading (the H1 is the title, not a section).

    Headings are found outside fenced code only. A paged text has its pages separated by
    PAGE_BREAK; a section never spans two pages, and the heading path runs on across them.
    """
    sections: list[Section] = []
    heading, stack = "", {}
    pages = markdown.split(PAGE_BREAK) if paged else [markdown.replace(PAGE_BREAK, "\n")]
    for number, page in enumerate(pages, start=1):
        body: list[str] = []
        fence = ""
        for line in page.splitlines():
            opener = _FENCE.match(line)
            if fence:
                if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                    fence = ""
                body.append(line)
                continue
            if opener:
                fence = opener.group(1)
                body.append(line)
                continue
            match = _HEADING.match(line)
            if match:
                if "\n".join(body).strip():
                    sections.append(
                        Section(heading, "\n".join(body).strip(), number if paged else None)
                    )
                level, text = len(match.group(1)), match.group(2).strip()
                stack = {k: v for k, v in stack.items() if k < level}
                if level > 1:
                    stack[level] = text
                heading = " > ".join(stack[k] for k in sorted(stack))
                body = []
            else:
                body.append(line)
        if "\n".join(body).strip():
            sections.append(Section(heading, "\n".join(body).strip(), number if paged else None))
    return sections


def chunk_text(
    markdown: str,
    *,
    max_tokens: int,
    overlap_tokens: int,
    count_tokens: TokenCounter,
    paged: bool = False,
) -> list[ChunkDraft]:
    """Chunks of at most max_tokens tokens of count_tokens, paragraph-aligned where possible.

    Paragraphs are packed together up to max_tokens. A paragraph longer than that is cut at
    sentence or clause ends (semchunk), and each piece after the first begins with up to
    overlap_tokens tokens of the end of the one before (from a sentence start where one falls in
    that stretch). Repeated passages are dropped. `paged`: see split_sections.
    """
    drafts: list[ChunkDraft] = []
    for section in split_sections(markdown, paged=paged):
        heading, page = section.heading, section.page
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", section.body) if p.strip()]
        # Paragraphs packed so far and their joined text's count: each packed text is counted
        # once, as a candidate, and that count is the chunk's (counting is most of chunking).
        current: list[str] = []
        current_tokens = 0
        for paragraph in paragraphs:
            if current:
                candidate = "\n\n".join([*current, paragraph])
                candidate_tokens = count_tokens(candidate)
                if candidate_tokens <= max_tokens:
                    current.append(paragraph)
                    current_tokens = candidate_tokens
                    continue
                drafts.append(ChunkDraft(heading, "\n\n".join(current), current_tokens, page))
                current = []
            paragraph_tokens = count_tokens(paragraph)
            if paragraph_tokens > max_tokens:
                pieces = _split_table(paragraph, max_tokens, count_tokens) or _split_long(
                    paragraph, max_tokens, overlap_tokens, count_tokens
                )
                drafts.extend(_draft(heading, piece, count_tokens, page) for piece in pieces)
                continue
            current, current_tokens = [paragraph], paragraph_tokens
        if current:
            drafts.append(ChunkDraft(heading, "\n\n".join(current), current_tokens, page))
    seen: set[str] = set()
    unique: list[ChunkDraft] = []
    for draft in drafts:
        key = " ".join(draft.text.split()).lower()
        if key not in seen:
            seen.add(key)
            unique.append(draft)
    return unique


def _draft(heading: str, text: str, count_tokens: TokenCounter, page: int | None) -> ChunkDraft:
    return ChunkDraft(heading=heading, text=text, token_count=count_tokens(text), page=page)


_TABLE_RULE = re.compile(r"\|(?:\s*:?-{3,}:?\s*\|)+")


def _split_table(text: str, max_tokens: int, count_tokens: TokenCounter) -> list[str]:
    """A markdown table cut between rows, each piece led by the header and its rule so it still
    says what its columns are; [] if text is not such a table or its header alone is too big."""
    lines = text.splitlines()
    if len(lines) < 3 or not lines[0].startswith("|") or not _TABLE_RULE.fullmatch(lines[1]):
        return []
    head = lines[:2]
    if count_tokens("\n".join(head)) * 2 > max_tokens:
        return []
    pieces: list[str] = []
    rows: list[str] = []
    for row in lines[2:]:
        if rows and count_tokens("\n".join([*head, *rows, row])) > max_tokens:
            pieces.append("\n".join([*head, *rows]))
            rows = []
        rows.append(row)
    pieces.append("\n".join([*head, *rows]))
    # A single row over the budget is cut like prose (its header then lost).
    return [
        part
        for piece in pieces
        for part in (
            _split_long(piece, max_tokens, 0, count_tokens)
            if count_tokens(piece) > max_tokens
            else [piece]
        )
    ]


def _split_long(
    text: str, max_tokens: int, overlap_tokens: int, count_tokens: TokenCounter
) -> list[str]:
    """Pieces of at most max_tokens tokens ending at the best boundary semchunk finds, each
    after the first led by an overlap of up to overlap_tokens from the piece before."""
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    # semchunk's own overlap slides windows that start and end mid-sentence: it cuts without
    # one, leaving room for the overlap added in front of each piece.
    # memoize=False: its memo is a process-wide dict that would grow with every document.
    pieces = semchunk.chunk(text, max_tokens - overlap_tokens, count_tokens, memoize=False)
    pieces = [piece.strip() for piece in pieces if piece.strip()]
    if not overlap_tokens:
        return pieces
    joined = pieces[:1]
    for previous, piece in zip(pieces, pieces[1:], strict=False):
        lead = _tail(previous, overlap_tokens, count_tokens)
        with_lead = f"{lead} {piece}" if lead else piece
        joined.append(with_lead if count_tokens(with_lead) <= max_tokens else piece)
    return joined


def _tail(text: str, budget: int, count_tokens: TokenCounter) -> str:
    """The longest end of text within budget tokens that starts at a sentence start, else a
    clause start, else a word start; "" if not even the last word fits."""
    for boundary in (_SENTENCE_START, _CLAUSE_START, _WORD_START):
        for match in boundary.finditer(text):
            tail = text[match.end() :]
            if tail and count_tokens(tail) <= budget:
                return tail
    return ""
