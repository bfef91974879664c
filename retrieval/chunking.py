"""Token-aware chunking that keeps each passage's document title and section heading."""

from __future__ import annotations

import re
from dataclasses import dataclass

from routing.tokens import encoding

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


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


def chunk_text(markdown: str, *, max_tokens: int, overlap_tokens: int) -> list[ChunkDraft]:
    """Chunks of at most max_tokens (by cl100k), paragraph-aligned where possible, with overlap."""
    enc = encoding()
    drafts: list[ChunkDraft] = []
    seen: set[str] = set()
    for heading, body in split_sections(markdown):
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        current: list[str] = []
        for paragraph in paragraphs:
            candidate = "\n\n".join([*current, paragraph])
            if current and len(enc.encode(candidate, disallowed_special=())) > max_tokens:
                drafts.append(_draft(heading, "\n\n".join(current), enc))
                current = []
            tokens = enc.encode(paragraph, disallowed_special=())
            if len(tokens) > max_tokens:
                step = max(1, max_tokens - overlap_tokens)
                for start in range(0, len(tokens), step):
                    drafts.append(
                        _draft(heading, enc.decode(tokens[start : start + max_tokens]), enc)
                    )
                    if start + max_tokens >= len(tokens):
                        break
                continue
            current.append(paragraph)
        if current:
            drafts.append(_draft(heading, "\n\n".join(current), enc))
    unique: list[ChunkDraft] = []
    for draft in drafts:
        key = " ".join(draft.text.split()).lower()
        if key not in seen:
            seen.add(key)
            unique.append(draft)
    return unique


def _draft(heading: str, text: str, enc) -> ChunkDraft:  # noqa: ANN001
    return ChunkDraft(
        heading=heading, text=text, token_count=len(enc.encode(text, disallowed_special=()))
    )
