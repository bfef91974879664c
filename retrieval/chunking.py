"""Token-aware chunking that keeps each passage's document title and section heading.

Sizes are measured with a token counter the caller passes (text -> number of tokens). Ingestion
passes the embedder's own (Embedder.count_tokens: for MiniLM its WordPiece tokenizer, without
[CLS]/[SEP]), so CHUNK_TOKENS and CHUNK_OVERLAP_TOKENS are tokens of the model that embeds the
passage, and a passage is never silently truncated by it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TokenCounter = Callable[[str], int]

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
# A word with the whitespace after it: joining consecutive words gives back the original text.
_WORD = re.compile(r"\S+\s*")
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s*$")


@dataclass(frozen=True)
class ChunkDraft:
    heading: str
    text: str
    token_count: int


def split_sections(markdown: str) -> list[tuple[str, str]]:
    """Split markdown into (heading path, body) sections; the H1 is the title, not a section."""
    sections: list[tuple[str, str]] = []
    heading, body, stack = "", [], {}
    for line in markdown.splitlines():
        match = _HEADING.match(line)
        if match:
            if "\n".join(body).strip():
                sections.append((heading, "\n".join(body).strip()))
            level, text = len(match.group(1)), match.group(2).strip()
            stack = {k: v for k, v in stack.items() if k < level}
            if level > 1:
                stack[level] = text
            heading = " > ".join(stack[k] for k in sorted(stack))
            body = []
        else:
            body.append(line)
    if "\n".join(body).strip():
        sections.append((heading, "\n".join(body).strip()))
    return sections


def chunk_text(
    markdown: str, *, max_tokens: int, overlap_tokens: int, count_tokens: TokenCounter
) -> list[ChunkDraft]:
    """Chunks of at most max_tokens tokens of count_tokens, paragraph-aligned where possible.

    Paragraphs are packed together up to max_tokens. A paragraph longer than that is cut at word
    boundaries (at a sentence end when one falls in the second half of the piece), and
    consecutive pieces share up to overlap_tokens tokens (from a sentence start when one falls in
    that stretch). Repeated passages are dropped.
    """
    drafts: list[ChunkDraft] = []
    for heading, body in split_sections(markdown):
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        current: list[str] = []
        for paragraph in paragraphs:
            candidate = "\n\n".join([*current, paragraph])
            if current and count_tokens(candidate) > max_tokens:
                drafts.append(_draft(heading, "\n\n".join(current), count_tokens))
                current = []
            if count_tokens(paragraph) > max_tokens:
                drafts.extend(
                    _draft(heading, piece, count_tokens)
                    for piece in _split_long(paragraph, max_tokens, overlap_tokens, count_tokens)
                )
                continue
            current.append(paragraph)
        if current:
            drafts.append(_draft(heading, "\n\n".join(current), count_tokens))
    seen: set[str] = set()
    unique: list[ChunkDraft] = []
    for draft in drafts:
        key = " ".join(draft.text.split()).lower()
        if key not in seen:
            seen.add(key)
            unique.append(draft)
    return unique


def _draft(heading: str, text: str, count_tokens: TokenCounter) -> ChunkDraft:
    return ChunkDraft(heading=heading, text=text, token_count=count_tokens(text))


def _split_long(
    text: str, max_tokens: int, overlap_tokens: int, count_tokens: TokenCounter
) -> list[str]:
    """Overlapping pieces of at most max_tokens tokens, cut between words."""
    words = [
        part for word in _WORD.findall(text) for part in _cut_word(word, max_tokens, count_tokens)
    ]

    def tokens(start: int, end: int) -> int:
        return count_tokens("".join(words[start:end]).strip())

    pieces: list[str] = []
    start = 0
    while start < len(words):
        # Every word is at least one token, so a piece never spans more than max_tokens words.
        end = _last_true(
            start + 1,
            min(len(words), start + max_tokens),
            lambda e, s=start: tokens(s, e) <= max_tokens,
        )
        if end < len(words):
            half = start + (end - start) // 2
            end = next((e for e in range(end, half, -1) if _SENTENCE_END.search(words[e - 1])), end)
        pieces.append("".join(words[start:end]).strip())
        if end >= len(words):
            break
        # The next piece starts as far back as overlap_tokens allows (at the first sentence
        # start in that stretch, if any), and always moves on.
        start = _first_true(
            max(start + 1, end - overlap_tokens),
            end,
            lambda s, e=end: tokens(s, e) <= overlap_tokens,
        )
        start = next((s for s in range(start, end) if _SENTENCE_END.search(words[s - 1])), start)
    return pieces


def _cut_word(word: str, max_tokens: int, count_tokens: TokenCounter) -> list[str]:
    """A word longer than max_tokens (a URL, a code) cut into pieces that fit, else the word."""
    parts: list[str] = []
    while count_tokens(word.strip()) > max_tokens:
        size = _last_true(1, len(word) - 1, lambda k, w=word: count_tokens(w[:k]) <= max_tokens)
        parts.append(word[:size])
        word = word[size:]
    return [*parts, word]


def _last_true(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n) for a predicate true up to some point; low if none."""
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _first_true(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The smallest n in [low, high] with ok(n) for a predicate true from some point; high if none."""
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    return low
