"""Read side of the knowledge base: find the passages closest to a question."""

from __future__ import annotations

from dataclasses import dataclass

from pgvector.django import CosineDistance

from retrieval.embedders import get_embedder
from retrieval.models import Chunk, KnowledgeDocument


@dataclass(frozen=True)
class Passage:
    """A retrieved passage as plain data (what the pipeline, prompt and scorer see)."""

    chunk_id: int
    document_id: int
    document_version: int
    title: str
    heading: str
    text: str
    similarity: float


async def passages_search(*, question: str, k: int, min_similarity: float) -> list[Passage]:
    """Top-k passages of READY documents by cosine similarity, dropping those below the floor."""
    vector = (await get_embedder().aembed([question]))[0]
    queryset = (
        Chunk.objects.filter(document__status=KnowledgeDocument.Status.READY)
        .select_related("document")
        .annotate(distance=CosineDistance("embedding", vector.tolist()))
        .order_by("distance")[:k]
    )
    passages = []
    async for chunk in queryset:
        similarity = 1.0 - float(chunk.distance)
        if similarity >= min_similarity:
            passages.append(
                Passage(
                    chunk_id=chunk.id,
                    document_id=chunk.document_id,
                    document_version=chunk.document.version,
                    title=chunk.document.title,
                    heading=chunk.heading,
                    text=chunk.text,
                    similarity=similarity,
                )
            )
    return passages
