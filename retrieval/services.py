"""Write side of the knowledge base: load a document's text, chunk it, embed it, index it."""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.db import transaction

from retrieval.chunking import chunk_text
from retrieval.embedders import get_embedder
from retrieval.models import Chunk, KnowledgeDocument


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def title_from_markdown(text: str, fallback: str) -> str:
    """The first '# ' heading, else the fallback."""
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else fallback


def embedding_input(*, title: str, heading: str, text: str) -> str:
    """What the embedder sees for a passage: title and section give it context."""
    prefix = f"{title} > {heading}" if heading else title
    return f"{prefix}\n{text}"


def document_ingest_text(*, source_name: str, title: str, text: str) -> KnowledgeDocument:
    """Create or replace a document from text and index it; unchanged text is a no-op."""
    digest = _sha256(text)
    document = KnowledgeDocument.objects.filter(source_name=source_name).first()
    if (
        document
        and document.content_hash == digest
        and document.status == KnowledgeDocument.Status.READY
    ):
        return document
    drafts = chunk_text(
        text, max_tokens=settings.CHUNK_TOKENS, overlap_tokens=settings.CHUNK_OVERLAP_TOKENS
    )
    if not drafts:
        raise ValueError(f"{source_name}: no text to index")
    vectors = get_embedder().embed(
        [embedding_input(title=title, heading=d.heading, text=d.text) for d in drafts]
    )
    # Chunks are swapped in one transaction: a reader sees the old version or the new one, never half.
    with transaction.atomic():
        if document is None:
            document = KnowledgeDocument(source_name=source_name, version=1)
        else:
            document.version += 1
            document.chunks.all().delete()
        document.title = title
        document.content = text
        document.content_hash = digest
        document.status = KnowledgeDocument.Status.READY
        document.error = ""
        document.chunks_total = document.chunks_done = len(drafts)
        document.save()
        Chunk.objects.bulk_create(
            Chunk(
                document=document,
                ordinal=i,
                heading=d.heading,
                text=d.text,
                token_count=d.token_count,
                content_hash=_sha256(d.text),
                embedding=vectors[i].tolist(),
            )
            for i, d in enumerate(drafts)
        )
    return document
